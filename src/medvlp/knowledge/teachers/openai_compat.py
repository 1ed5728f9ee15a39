"""A teacher over any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp
server, OpenAI), with the standard library only.

* JSON-schema response format (``response_format={"type": "json_schema", ...}``) where the
  server accepts it; a server that rejects it with HTTP 400 is asked again without it, and the
  schema check in :mod:`.base` still guards every answer.
* Per-request timeout, retries with exponential backoff on timeouts, connection errors, HTTP 429
  and 5xx; other HTTP errors fail at once (retrying a 401 helps nobody).
* ``concurrency`` bounds how many requests the structuring runner keeps in flight.
* The privacy guard refuses non-loopback URLs unless ``allow_remote=True``.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from medvlp.knowledge.teachers.base import TeacherError
from medvlp.knowledge.teachers.privacy import check_endpoint, is_loopback_url

_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAICompatTeacher:
    """Chat-completions client. ``base_url`` ends before ``/chat/completions``
    (e.g. ``http://127.0.0.1:8000/v1`` for vLLM, ``http://localhost:11434/v1`` for Ollama).
    ``model=None`` asks the server's ``/models`` and takes the first (vLLM serves one)."""

    def __init__(self, base_url: str, model: str | None = None, *, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 3, backoff: float = 0.5,
                 concurrency: int = 4, allow_remote: bool = False, temperature: float = 0.0,
                 max_tokens: int = 1024, json_schema: bool = True):
        check_endpoint(base_url, allow_remote)
        self.base_url = base_url.rstrip("/")
        self.allow_remote = allow_remote
        self.remote = not is_loopback_url(base_url)
        # The key is read from the environment only for a remote server the user allowed.
        self.api_key = api_key if api_key is not None else (
            os.environ.get("OPENAI_API_KEY") if self.remote else None)
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.concurrency, self.temperature, self.max_tokens = concurrency, temperature, max_tokens
        self._json_schema = json_schema
        self._lock = threading.Lock()
        self.model = model or self._first_model()
        self.name = f"openai:{self.model}"

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One HTTP exchange with retries; returns the decoded JSON body."""
        url = f"{self.base_url}{path}"
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace")
                last = f"HTTP {e.code} from {url}: {detail}"
                if e.code == 400:
                    raise _BadRequest(last) from e
                if e.code in _RETRYABLE_STATUS:
                    continue
                raise TeacherError(last) from e
            except (TimeoutError, socket.timeout):
                last = f"timeout after {self.timeout}s from {url}"
                continue
            except (urllib.error.URLError, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                if isinstance(reason, (TimeoutError, socket.timeout)):
                    last = f"timeout after {self.timeout}s from {url}"
                else:
                    last = f"cannot reach {url}: {reason}"
                continue
            try:
                return json.loads(raw)
            except json.JSONDecodeError:
                last = f"server {url} returned a non-JSON body: {raw[:200]!r}"
                continue
        raise TeacherError(f"{last} (gave up after {self.max_retries + 1} tries)")

    def _first_model(self) -> str:
        try:
            listing = self._request("GET", "/models", None)
            return str(listing["data"][0]["id"])
        except (TeacherError, _BadRequest, KeyError, IndexError, TypeError) as e:
            raise TeacherError(f"{self.base_url}/models did not name a model ({e}); pass the "
                               "model explicitly, e.g. teacher='openai:URL#MODEL'") from e

    def generate(self, prompt: str, schema: dict[str, Any]) -> str:
        body: dict[str, Any] = {
            "model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens,
            "messages": [{"role": "user", "content": prompt}],
        }
        with self._lock:
            use_schema = self._json_schema
        if use_schema:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "ums_answer", "schema": schema, "strict": True}}
        try:
            reply = self._request("POST", "/chat/completions", body)
        except _BadRequest as e:
            if not use_schema:
                raise TeacherError(str(e)) from e
            # Older servers reject json_schema: remember and ask plainly from now on.
            with self._lock:
                self._json_schema = False
            body.pop("response_format")
            try:
                reply = self._request("POST", "/chat/completions", body)
            except _BadRequest as e2:
                raise TeacherError(str(e2)) from e2
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise TeacherError(f"unexpected reply shape from {self.base_url}: "
                               f"{json.dumps(reply)[:200]}") from e
        if not isinstance(content, str):
            raise TeacherError(f"reply content is {type(content).__name__}, expected text")
        return content


class _BadRequest(TeacherError):
    """HTTP 400: not retried as is (often an unsupported response_format)."""
