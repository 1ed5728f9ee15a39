"""Where data files are found: the data root and the bundled sets.

Precedence (first that applies wins):

1. an explicit path (``--data-root`` on the command line, ``root=`` in Python);
2. the environment variable ``MEDVLP_DATA``;
3. ``../shared/data`` relative to the current directory;
4. ``<repo>/../shared/data`` found from this file's location (an editable checkout).

An explicit path or ``MEDVLP_DATA`` that does not exist is an error, not a reason to look
elsewhere: a typo must never make a run silently read other data.
"""
from __future__ import annotations

import os
from pathlib import Path

from medvlp.errors import DataError

ENV_VAR = "MEDVLP_DATA"
_SHARED_REL = Path("..") / "shared" / "data"


def data_root(explicit: str | Path | None = None) -> Path | None:
    """The data root folder, or None when none is configured and none of the defaults exists."""
    if explicit is not None:
        return _must_exist(Path(explicit).expanduser(), "the data root given explicitly")
    env = os.environ.get(ENV_VAR)
    if env:
        return _must_exist(Path(env).expanduser(), f"the data root named by ${ENV_VAR}")
    for candidate in _default_candidates():
        if candidate.is_dir():
            return candidate.resolve()
    return None


def bundled_dir() -> Path:
    """The folder of small real data sets shipped inside the package (see bundled/NOTICE.md)."""
    return Path(__file__).resolve().parent / "bundled"


def find_file(relpath: str, root: str | Path | None = None, *, bundled: str | None = None) -> Path:
    """Locate ``relpath`` under the data root, then (if ``bundled`` is given) in the bundled folder.

    Raises DataError listing every place that was looked at.
    """
    looked: list[str] = []
    base = data_root(root)
    if base is not None:
        p = base / relpath
        if p.is_file():
            return p
        looked.append(str(p))
    else:
        looked.append(f"no data root (set --data-root or ${ENV_VAR})")
    if bundled is not None:
        p = bundled_dir() / bundled
        if p.is_file():
            return p
        looked.append(str(p))
    raise DataError(relpath, "file not found", "it at one of: " + "; ".join(looked))


def _default_candidates() -> list[Path]:
    # parents: data -> medvlp -> src -> <repo>; the shared folder sits beside the repo.
    repo = Path(__file__).resolve().parents[3]
    return [Path.cwd() / _SHARED_REL, repo.parent / "shared" / "data"]


def _must_exist(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(path, f"{what} does not exist or is not a folder", "an existing folder")
    return path
