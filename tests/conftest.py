"""Shared fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data root (MEDVLP_DATA or ../shared/data); tests needing it skip when absent."""
    from medvlp.data.root import data_root
    from medvlp.errors import DataError

    try:
        root = data_root()
    except DataError as e:
        pytest.skip(f"data root unusable: {e}")
    if root is None:
        pytest.skip("no data root (set MEDVLP_DATA or provide ../shared/data)")
    return root
