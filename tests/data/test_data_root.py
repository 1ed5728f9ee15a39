from pathlib import Path

import pytest

from medvlp.data.root import ENV_VAR, bundled_dir, data_root, find_file
from medvlp.errors import DataError


def test_explicit_beats_env_and_cwd(tmp_path, monkeypatch):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    explicit.mkdir(), env.mkdir()
    monkeypatch.setenv(ENV_VAR, str(env))
    assert data_root(explicit) == explicit
    assert data_root() == env


def test_cwd_shared_data_used_without_env(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    work = tmp_path / "repo"
    work.mkdir()
    monkeypatch.chdir(work)
    assert data_root() == shared.resolve()


def test_missing_explicit_or_env_root_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=str(missing)):
        data_root(missing)
    monkeypatch.setenv(ENV_VAR, str(missing))
    with pytest.raises(DataError, match="MEDVLP_DATA"):
        data_root()


def test_find_file_falls_back_to_bundled_and_lists_places(tmp_path):
    p = find_file("medmnist/breastmnist.npz", tmp_path, bundled="breastmnist.npz")
    assert p == bundled_dir() / "breastmnist.npz"
    with pytest.raises(DataError) as e:
        find_file("medmnist/none.npz", tmp_path, bundled="none.npz")
    assert str(tmp_path / "medmnist" / "none.npz") in str(e.value)
    assert str(bundled_dir() / "none.npz") in str(e.value)


def test_find_file_prefers_data_root(shared_data: Path):
    assert find_file("medmnist/breastmnist.npz", shared_data, bundled="breastmnist.npz") == \
        shared_data / "medmnist" / "breastmnist.npz"
