"""On-disk answer cache (SQLite) keyed by model + prompt + schema.

A re-run of the same structuring job is served from here, and a killed run resumes without
paying again for what was answered. Only answers are cached, never transport failures, so a
re-run retries what failed.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from medvlp.errors import DataError


def cache_key(model: str, prompt: str, schema: Any) -> str:
    """sha256 over the model name, the exact prompt and the canonical JSON of the schema."""
    h = hashlib.sha256()
    for part in (model, prompt, json.dumps(schema, sort_keys=True, separators=(",", ":"))):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


class AnswerCache:
    """A thread-safe SQLite key-value store with hit/miss counters.

    Writes are committed every ``commit_every`` puts (and on :meth:`close`), trading at most that
    many lost answers on a hard kill for not paying an fsync per record.
    """

    def __init__(self, path: str | Path, commit_every: int = 64):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, "
                             "model TEXT NOT NULL, value TEXT NOT NULL, created REAL NOT NULL)")
        except sqlite3.DatabaseError as e:
            raise DataError(self.path, f"cannot open the answer cache ({e})",
                            "an SQLite file written by medvlp") from e
        self._lock = threading.Lock()
        self._pending = 0
        self.commit_every = commit_every
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM answers WHERE key=?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
            return row[0]

    def put(self, key: str, model: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?,?,?,?)",
                             (key, model, value, time.time()))
            self._pending += 1
            if self._pending >= self.commit_every:
                self._db.commit()
                self._pending = 0

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.commit()
            self._db.close()

    def __enter__(self) -> "AnswerCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
