"""Evaluate a frozen backbone on datasets under probe protocols, seeds and bootstrap CIs.

Features are extracted once per dataset; every (dataset, protocol, seed) run records test
metrics, val metrics, the chosen hyper-parameters and a percentile-bootstrap 95 % CI of one
metric over test images. The JSON names everything needed to compare runs like with like:
the split hash (which images and labels), the config hash (which protocol settings), the seeds,
the machine and the medvlp version.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.decomposition import PCA

from medvlp.data.imageset import ImageSet
from medvlp.eval.features import extract_features, split_arrays
from medvlp.eval.knn import knn_probe
from medvlp.eval.metrics import bootstrap_distribution, percentile_interval, summarize_seeds
from medvlp.eval.probe import ProbeResult, logistic_probe, torch_linear_probe
from medvlp.errors import DataError
from medvlp.models.backbone import Backbone
from medvlp.utils import machine_info, stable_hash

PROTOCOLS: dict[str, Callable[..., ProbeResult]] = {
    "logreg": logistic_probe,
    "torch_linear": torch_linear_probe,
    "knn": knn_probe,
}


def split_hash(imageset: ImageSet) -> str:
    """Hash of the split assignment and the labels: equal hashes mean the same evaluation set."""
    return stable_hash([stable_hash(np.asarray(imageset.split).astype(str)),
                        stable_hash(np.ascontiguousarray(imageset.labels))])


@dataclass
class DatasetEval:
    """Everything measured on one dataset. ``test_scores`` / ``test_labels`` / ``embedding_2d``
    are kept in memory for the HTML report only (they are not written to JSON)."""

    name: str
    task: str
    label_names: list[str]
    n: dict[str, int]
    split_hash: str
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    test_scores: dict[str, np.ndarray] = field(default_factory=dict)
    test_labels: np.ndarray | None = None
    embedding_2d: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        protocols = {}
        for proto, runs in self.runs.items():
            protocols[proto] = {
                "per_seed": [{k: v for k, v in r.items() if k != "ci95"} for r in runs],
                "summary": summarize_seeds([r["metrics"] for r in runs]),
                "ci95": {str(r["seed"]): r["ci95"] for r in runs},
            }
        return {"task": self.task, "label_names": self.label_names, "n": self.n,
                "split_hash": self.split_hash, "protocols": protocols}


@dataclass
class EvalReport:
    """Results of :func:`evaluate_backbone`; ``to_json`` is the record to save and compare."""

    datasets: dict[str, DatasetEval]
    seeds: list[int]
    settings: dict[str, Any]
    backbone_config: dict[str, Any]
    machine: dict[str, Any]

    @property
    def config_hash(self) -> str:
        return stable_hash(self.settings)

    def to_json(self) -> dict[str, Any]:
        from medvlp import __version__

        return {
            "datasets": {name: d.to_json() for name, d in self.datasets.items()},
            "seeds": list(self.seeds),
            "settings": self.settings,
            "config_hash": self.config_hash,
            "backbone": self.backbone_config,
            "machine": self.machine,
            "medvlp_version": __version__,
        }

    def save_json(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_json(), indent=2, default=_json_default))
        return p

    def report_sections(self) -> list[Any]:
        """Summary table, ROC curves and a PCA embedding per dataset for ``write_html_report``."""
        from medvlp.eval.report import sections_for_eval

        return sections_for_eval(self)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def _embedding_2d(x: np.ndarray, seed: int) -> np.ndarray:
    """First two principal components of the test features (for the report's scatter)."""
    if len(x) < 2 or x.shape[1] < 2:
        return np.zeros((len(x), 2))
    return PCA(n_components=2, random_state=seed).fit_transform(x)


def evaluate_backbone(backbone: Backbone, datasets: Sequence[ImageSet], *,
                      protocols: Sequence[str] = ("logreg",), seeds: Sequence[int] = (0,),
                      n_boot: int = 1000, batch_size: int = 256, device: str = "auto",
                      bootstrap_metric: str = "macro_auc",
                      protocol_kwargs: dict[str, dict[str, Any]] | None = None) -> EvalReport:
    """Probe ``backbone``'s frozen features on every dataset under every protocol and seed.

    ``protocols`` are names in :data:`PROTOCOLS`; ``protocol_kwargs`` passes hyper-parameters to
    one protocol (e.g. ``{"logreg": {"Cs": [0.1]}}``) and is part of the config hash. The
    bootstrap of seed s uses ``seed=s`` so CIs are reproducible.
    """
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocols {unknown}; known: {sorted(PROTOCOLS)}")
    protocol_kwargs = {k: dict(v) for k, v in (protocol_kwargs or {}).items()}
    stray = set(protocol_kwargs) - set(protocols)
    if stray:
        raise ValueError(f"protocol_kwargs for protocols not run: {sorted(stray)}")
    if len({d.name for d in datasets}) != len(datasets):
        raise ValueError("dataset names must be unique")
    settings = {"protocols": list(protocols), "protocol_kwargs": protocol_kwargs,
                "seeds": list(seeds), "n_boot": n_boot, "bootstrap_metric": bootstrap_metric,
                "preprocess": backbone.preprocess}
    results: dict[str, DatasetEval] = {}
    for ds in datasets:
        feats = extract_features(backbone, ds, batch_size=batch_size, device=device)
        splits = split_arrays(feats, ds)
        missing = [s for s in ("train", "val", "test") if s not in splits]
        if missing:
            raise DataError(ds.source or ds.name, f"dataset {ds.name!r} has no images in "
                            f"split(s) {missing}", expected="train, val and test splits (probes "
                            "choose hyper-parameters on val and report test)")
        entry = DatasetEval(name=ds.name, task=ds.task, label_names=list(ds.label_names),
                            n={s: int(len(v[1])) for s, v in splits.items()},
                            split_hash=split_hash(ds), test_labels=splits["test"][1],
                            embedding_2d=_embedding_2d(splits["test"][0], int(seeds[0])))
        for proto in protocols:
            entry.runs[proto] = []
            for seed in seeds:
                result = PROTOCOLS[proto](splits["train"], splits["val"], splits["test"],
                                          ds.task, seed=int(seed), label_names=ds.label_names,
                                          **protocol_kwargs.get(proto, {}))
                values, skipped = bootstrap_distribution(
                    splits["test"][1], result.test_scores, ds.task, bootstrap_metric,
                    n_boot=n_boot, seed=int(seed))
                lo, hi = percentile_interval(values, alpha=0.05)
                entry.runs[proto].append({
                    "seed": int(seed), "metrics": result.metrics,
                    "val_metrics": result.val_metrics, "chosen": result.chosen,
                    "notes": result.notes,
                    "ci95": {"metric": bootstrap_metric, "lo": lo, "hi": hi, "n_boot": n_boot,
                             "n_skipped": skipped},
                })
                if seed == seeds[0]:
                    entry.test_scores[proto] = result.test_scores
        results[ds.name] = entry
    return EvalReport(datasets=results, seeds=[int(s) for s in seeds], settings=settings,
                      backbone_config=dict(backbone.config), machine=machine_info())
