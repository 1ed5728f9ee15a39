"""What every bench suite shares: the downstream tasks, the probe rows and the markdown tables.

One protocol for every method: the same task list, splits, probe, seeds and CI; a row excluded
(not silently dropped) when pretraining saw that task's labels.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from medvlp.errors import DataError

log = logging.getLogger(__name__)

# The downstream tasks of the quality tables, in display order.
PROBE_TASKS = ["pneumoniamnist", "breastmnist", "nih1000", "ham10000", "tcga_luad_contrast"]


def load_tasks(names: list[str], data_root: str | None, dataset_kwargs: dict[str, dict] | None = None):
    """``(loaded ImageSets, {name: why skipped})`` — a task missing here is skipped and said so."""
    from medvlp.data import load_dataset

    tasks, skipped = [], {}
    for name in names:
        try:
            tasks.append(load_dataset(name, root=data_root, **(dataset_kwargs or {}).get(name, {})))
        except (DataError, FileNotFoundError) as e:
            skipped[name] = f"not available here: {e}"
            log.warning("bench: skipping %s (%s)", name, e)
    return tasks, skipped


def probe_rows(label: str, backbone, tasks, *, protocols=("logreg",), seeds=(0,),
               excluded: dict[str, str] | None = None, init: str = "") -> list[dict[str, Any]]:
    """Quality rows for one frozen backbone on every task, through ``evaluate_backbone``.

    ``excluded`` maps task name -> reason (e.g. "pretraining used this task's labels"); those tasks
    get an explicit excluded row instead of a score.
    """
    from medvlp.eval.protocol import evaluate_backbone

    excluded = excluded or {}
    rows: list[dict[str, Any]] = [{"task": t.name, "method": label, "protocol": "-", "excluded": excluded[t.name]}
                                  for t in tasks if t.name in excluded]
    usable = [t for t in tasks if t.name not in excluded]
    if not usable:
        return rows
    rep = evaluate_backbone(backbone, usable, protocols=tuple(protocols), seeds=tuple(seeds)).to_json()
    for name, ds in rep["datasets"].items():
        for proto, p in ds["protocols"].items():
            rows.append({"task": name, "method": label, "protocol": proto, "init": init,
                         "summary": p["summary"], "ci95": p["ci95"], "split_hash": ds.get("split_hash")})
    return rows


def md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def quality_markdown(rows: list[dict[str, Any]], skipped: dict[str, str] | None = None) -> list[str]:
    """The quality table: task, method, protocol, macro-AUC (mean ± std over seeds), 95 % CI, accuracy."""
    lines = ["| task | method | protocol | macro-AUC | 95% CI | accuracy |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "excluded" in r:
            lines.append(f"| {r['task']} | {r['method']} | - | excluded: {r['excluded']} | | |")
            continue
        if "summary" in r:
            auc = r["summary"].get("macro_auc", {})
            acc = r["summary"].get("accuracy", {})
            ci_rec = next(iter((r.get("ci95") or {}).values()), {})
            ci = (ci_rec["lo"], ci_rec["hi"]) if ci_rec.get("metric") == "macro_auc" else None
            auc_s = f"{auc.get('mean', float('nan')):.3f} ± {auc.get('std', 0):.3f}"
            acc_s = f"{acc.get('mean', float('nan')):.3f}"
        else:
            met = r["metrics"]
            auc_s, acc_s, ci = f"{met.get('macro_auc', float('nan')):.3f}", f"{met.get('accuracy', float('nan')):.3f}", None
        ci_s = f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else ""
        lines.append(f"| {r['task']} | {r['method']} | {r.get('protocol', '')} | {auc_s} | {ci_s} | {acc_s} |")
    for name, why in (skipped or {}).items():
        lines.append(f"\nSkipped {name}: {why}")
    return lines


def machine_header(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    return [f"# medvlp bench: {result['suite']}", "",
            f"Machine: {m.get('processor')} ({m.get('cpu_count')} cores), torch {m.get('torch')}, "
            f"GPU: {m.get('gpu', 'none')}. Took {result.get('seconds')} s.", ""]


def json_default(o):
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
