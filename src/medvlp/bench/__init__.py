"""``medvlp bench``: named suites that measure every method in one harness.

A suite lives in a module of this package that defines ``SUITES`` (name -> spec dict),
``run(spec, out_dir, data_root) -> dict`` and ``markdown(result) -> list[str]``; this module adds
the machine, timing and config, and writes ``<out>/<suite>.json`` and ``<out>/<suite>.md``.
Suites of methods whose module is missing here simply are not listed.
"""
from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Any

from medvlp.bench.common import json_default, machine_header

# Modules that hold suites, in listing order.
SUITE_MODULES = ["baselines", "vivid", "mflag", "segmentation", "lvmmed", "vip", "ct3d"]


def _suite_index() -> dict[str, tuple[Any, dict[str, Any]]]:
    index: dict[str, tuple[Any, dict[str, Any]]] = {}
    for name in SUITE_MODULES:
        try:
            module = importlib.import_module(f"medvlp.bench.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"medvlp.bench.{name}":
                continue
            raise
        for suite, spec in module.SUITES.items():
            index[suite] = (module, spec)
    return index


def list_suites() -> list[str]:
    return list(_suite_index())


def run_suite(suite: str, out_dir: str | Path, *, data_root: str | None = None,
              parts: list[str] | None = None) -> list[Path]:
    """Run ``suite``; returns the JSON and markdown paths."""
    from medvlp.utils import machine_info

    index = _suite_index()
    if suite not in index:
        raise ValueError(f"unknown suite {suite!r}; available: {', '.join(index)}")
    module, spec = index[suite]
    spec = dict(spec, name=suite, **({"parts": parts} if parts else {}))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    result: dict[str, Any] = {"suite": suite, "config": spec, "machine": machine_info(),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    result.update(module.run(spec, out, data_root))
    result["seconds"] = round(time.time() - t0, 1)
    json_path = out / f"{suite}.json"
    json_path.write_text(json.dumps(result, indent=2, default=json_default))
    md_path = out / f"{suite}.md"
    md_path.write_text(to_markdown(result, module))
    return [json_path, md_path]


def to_markdown(result: dict[str, Any], module=None) -> str:
    if module is None:
        module = _suite_index()[result["suite"]][0]
    return "\n".join(machine_header(result) + module.markdown(result)) + "\n"


def __getattr__(name: str):
    # ``SUITES`` stays importable (tests, docs) as the merged index of every available suite.
    if name == "SUITES":
        return {k: spec for k, (_, spec) in _suite_index().items()}
    raise AttributeError(name)
