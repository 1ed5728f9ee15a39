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


@pytest.fixture
def no_network(monkeypatch):
    """HF offline and every socket connect refused: any network access fails loudly."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in a test that must be offline")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
