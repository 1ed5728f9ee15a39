"""Privacy guard: report text goes only to a loopback endpoint unless the user allows a remote one.

Reports are patient data. Sending them to another machine must be a visible, recorded choice
(``allow_remote=True`` / ``--allow-remote``), never a side effect of a typo in a URL.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from medvlp.errors import MedvlpError


class PrivacyError(MedvlpError):
    """Report text would leave this machine without the user's explicit permission."""


def is_loopback_url(url: str) -> bool:
    """True for http(s) URLs whose host is localhost or a loopback IP (127.0.0.0/8, ::1)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str, allow_remote: bool) -> None:
    """Raise :class:`PrivacyError` for a non-loopback ``url`` unless ``allow_remote``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PrivacyError(f"teacher endpoint {url!r}: expected an http(s) URL such as "
                           "http://127.0.0.1:8000/v1")
    if not allow_remote and not is_loopback_url(url):
        raise PrivacyError(
            f"refusing to send report text to {parts.hostname} ({url}): it is not a loopback "
            "address. Reports may contain patient data; if this server is allowed to receive "
            "them, pass allow_remote=True (CLI: --allow-remote). The choice is recorded in the "
            "run's metadata.")
