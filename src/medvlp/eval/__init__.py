"""medvlp.eval: frozen-feature probes, kNN, fine-tuning, cross-dataset transfer, metrics with
bootstrap CIs, JSON results and a self-contained HTML report.

    from medvlp.eval import evaluate_backbone, write_html_report
    report = evaluate_backbone(backbone, [ds], protocols=("logreg", "knn"), seeds=(0, 1, 2))
    report.save_json("results/eval.json")
    write_html_report("results/eval.html", title="my backbone", sections=report.report_sections())

``finetune`` lives in :mod:`medvlp.eval.finetune` (it pulls in the training engine).
"""
from medvlp.eval.anchors import anchor_rows
from medvlp.eval.features import extract_features, features_for_splits
from medvlp.eval.knn import knn_probe
from medvlp.eval.metrics import (bootstrap_ci, bootstrap_distribution, classification_metrics,
                                 summarize_seeds)
from medvlp.eval.probe import ProbeResult, logistic_probe, torch_linear_probe
from medvlp.eval.protocol import EvalReport, evaluate_backbone
from medvlp.eval.report import (EmbeddingSection, RocCurve, RocSection, TableSection,
                                TextSection, write_html_report)
from medvlp.eval.transfer import transfer_head

__all__ = [
    "anchor_rows", "extract_features", "features_for_splits", "knn_probe", "bootstrap_ci",
    "bootstrap_distribution", "classification_metrics", "summarize_seeds", "ProbeResult",
    "logistic_probe", "torch_linear_probe", "EvalReport", "evaluate_backbone",
    "EmbeddingSection", "RocCurve", "RocSection", "TableSection", "TextSection",
    "write_html_report", "transfer_head",
]
