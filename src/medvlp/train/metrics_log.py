"""What a run reports: ``metrics.jsonl`` (always), TensorBoard (optional), a rich progress bar.

``metrics.jsonl`` holds one JSON object per log step::

    {"step": 20, "epoch": 0.625, "loss": 0.41, "acc": 0.83, "lr": 0.00093,
     "images_per_s": 812.4, "time": 1763890000.1}

Loss values are means over the steps since the previous record and over all ranks, so every rank
computes the same record; only the main rank writes. Each line is flushed as it is written. On
resume the records after the checkpoint's step are dropped (they belong to the part of the killed
run that is replayed) before new ones are appended, so the file reads like one uninterrupted run.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from medvlp.errors import ConfigError, DataError

METRICS_NAME = "metrics.jsonl"


def read_metrics(path: str | Path, upto_step: int | None = None) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` with ``step <= upto_step`` (all when None).

    A torn last line (the process was killed while writing it) is dropped; a bad line anywhere
    else is a :class:`DataError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or "step" not in rec:
                raise ValueError("not an object with a 'step'")
        except ValueError as e:
            if i == len(lines) - 1:
                break
            raise DataError(path, f"line {i + 1} is not a metrics record ({e})",
                            "one JSON object with a 'step' per line") from e
        if upto_step is None or rec["step"] <= upto_step:
            records.append(rec)
    return records


class MetricsLog:
    """Appends records to ``out_dir/metrics.jsonl`` (main rank) and optionally to TensorBoard."""

    def __init__(self, out_dir: str | Path, *, write: bool, tensorboard: bool = False):
        self.path = Path(out_dir) / METRICS_NAME
        self.write_enabled = write
        self._file = None
        self._tb = None
        if write and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ConfigError("tensorboard=True needs the 'tensorboard' package "
                                  "(pip install 'medvlp[tensorboard]')") from e
            self._tb = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))

    def start(self, records: list[dict[str, Any]]) -> None:
        """Make the file hold exactly ``records`` (atomically), then open it for appending."""
        if not self.write_enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        os.replace(tmp, self.path)
        self._file = open(self.path, "a")

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("step", "time"):
                    self._tb.add_scalar(f"train/{key}", value, record["step"])
            self._tb.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class ProgressBar:
    """A rich progress bar over optimizer steps, shown only when asked for and stdout is a TTY
    (so logs of batch jobs and ``torchrun`` ranks are not flooded with redraws)."""

    def __init__(self, total: int, start: int, enabled: bool):
        self._progress = None
        if enabled and sys.stdout.isatty():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TimeRemainingColumn(),
                                      TextColumn("{task.fields[status]}"))
            self._task = self._progress.add_task("train", total=total, completed=start, status="")
            self._progress.start()

    def update(self, step: int, record: dict[str, Any] | None = None) -> None:
        if self._progress is None:
            return
        fields = {}
        if record is not None:
            fields["status"] = "  ".join(
                f"{k}={v:.4g}" for k, v in record.items()
                if k not in ("step", "epoch", "time", "images_per_s"))
        self._progress.update(self._task, completed=step, **fields)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
