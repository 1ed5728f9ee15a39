"""Fixtures for the models tests."""
from __future__ import annotations

import pytest


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
