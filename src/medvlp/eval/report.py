"""A self-contained HTML report: tables, ROC curves, embedding scatters and notes.

Figures are drawn with matplotlib's Agg backend and embedded as base64 PNG, so the report is one
file that opens anywhere. Every piece of text is passed through ``html.escape``: dataset names,
label names and notes come from user data and must never become markup.
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:
    from medvlp.eval.protocol import EvalReport

MAX_ROC_LINES = 14  # one line per NIH ChestX-ray14 finding; more become unreadable


@dataclass
class TableSection:
    """Rows of equal or differing keys; the columns are the union of keys in first-seen order."""

    title: str
    rows: list[dict[str, Any]]


@dataclass
class RocCurve:
    """One ROC line: binary labels (NaN = unknown, dropped) and scores."""

    label: str
    y_true: np.ndarray
    y_score: np.ndarray


@dataclass
class RocSection:
    title: str
    curves: list[RocCurve]


@dataclass
class EmbeddingSection:
    """2-D points coloured by label; ``labels`` (N,) class ids, ``label_names`` their names."""

    title: str
    points: np.ndarray
    labels: np.ndarray
    label_names: list[str]


@dataclass
class TextSection:
    title: str
    text: str


@dataclass
class ImageGridSection:
    """Images in a grid, each optionally overlaid with a heat map (e.g. SPD attention) stretched
    over the whole image; ``images`` (H, W) or (H, W, 3), ``overlays`` (h, w) any size."""

    title: str
    images: list[np.ndarray]
    overlays: list[np.ndarray | None] | None = None
    captions: list[str] | None = None
    ncols: int = 4


Section = Union[TableSection, RocSection, EmbeddingSection, TextSection, ImageGridSection]


def _render_image_grid(section: ImageGridSection) -> str:
    n = len(section.images)
    if n == 0:
        return "<p class='note'>no images</p>"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(1, min(section.ncols, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        img = np.asarray(section.images[k])
        h, w = img.shape[:2]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, extent=(0, w, h, 0))
        ov = section.overlays[k] if section.overlays else None
        if ov is not None:
            ax.imshow(np.asarray(ov, dtype=float), cmap="jet", alpha=0.45, extent=(0, w, h, 0),
                      interpolation="nearest")
        if section.captions and k < len(section.captions):
            ax.set_title(section.captions[k], fontsize=7)
    fig.tight_layout()
    return _figure_to_img(fig)


def _figure_to_img(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="figure">'


def _new_figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display on servers; must precede pyplot use
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(5.5, 4.5))


def _format_cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4f}"
    return str(value)


def _render_table(section: TableSection) -> str:
    columns: list[str] = []
    for row in section.rows:
        columns += [k for k in row if k not in columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_format_cell(row.get(c)))}</td>" for c in columns)
        + "</tr>" for row in section.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _render_roc(section: RocSection) -> str:
    from sklearn.metrics import roc_curve

    from medvlp.eval.metrics import binary_auc

    fig, ax = _new_figure()
    if len(section.curves) > 10:
        import matplotlib

        # The default cycle has 10 colours; 14 findings would repeat colours.
        ax.set_prop_cycle(color=matplotlib.colormaps["tab20"].colors)
    skipped = []
    for curve in section.curves[:MAX_ROC_LINES]:
        y = np.asarray(curve.y_true, dtype=np.float64)
        known = ~np.isnan(y)
        auc = binary_auc(y[known], np.asarray(curve.y_score)[known])
        if auc is None:
            skipped.append(curve.label)  # one label value only: no ROC curve exists
            continue
        fpr, tpr, _ = roc_curve(y[known], np.asarray(curve.y_score)[known])
        ax.plot(fpr, tpr, lw=1.2, label=f"{curve.label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    out = _figure_to_img(fig)
    dropped = section.curves[MAX_ROC_LINES:]
    if dropped or skipped:
        msg = []
        if skipped:
            msg.append("no ROC (single label value): " + ", ".join(skipped))
        if dropped:
            msg.append(f"{len(dropped)} more curves not drawn (limit {MAX_ROC_LINES})")
        out += f"<p class='note'>{html.escape('; '.join(msg))}</p>"
    return out


def _render_embedding(section: EmbeddingSection) -> str:
    fig, ax = _new_figure()
    labels = np.asarray(section.labels)
    for value in np.unique(labels):
        mask = labels == value
        name = (section.label_names[int(value)] if 0 <= int(value) < len(section.label_names)
                else str(value))
        ax.scatter(section.points[mask, 0], section.points[mask, 1], s=6, alpha=0.7, label=name)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=7, markerscale=2)
    return _figure_to_img(fig)


def _render(section: Section) -> str:
    if isinstance(section, TableSection):
        body = _render_table(section)
    elif isinstance(section, RocSection):
        body = _render_roc(section)
    elif isinstance(section, EmbeddingSection):
        body = _render_embedding(section)
    elif isinstance(section, ImageGridSection):
        body = _render_image_grid(section)
    elif isinstance(section, TextSection):
        body = "".join(f"<p>{html.escape(p)}</p>" for p in section.text.split("\n\n"))
    else:
        raise TypeError(f"unknown report section type {type(section).__name__}")
    return f"<section><h2>{html.escape(section.title)}</h2>{body}</section>"


_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
          "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
          "padding:3px 8px;text-align:left}th{background:#f2f2f2}.note{color:#666;font-size:12px}")


def write_html_report(path: str | Path, *, title: str, sections: Sequence[Section]) -> Path:
    """Write one self-contained HTML file with ``sections`` in order; returns its path."""
    body = "".join(_render(s) for s in sections)
    t = html.escape(title)
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{t}</title>"
           f"<style>{_STYLE}</style></head><body><h1>{t}</h1>{body}</body></html>")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(doc, encoding="utf-8")
    return p


def _roc_curves(task: str, label_names: list[str], y: np.ndarray,
                scores: np.ndarray) -> list[RocCurve]:
    """Per-class one-vs-rest curves (binary: the positive class only)."""
    if task == "binary":
        return [RocCurve(label_names[-1] if label_names else "1",
                         np.asarray(y).reshape(len(y)), scores)]
    if task == "multiclass":
        return [RocCurve(name, (y == c).astype(float), scores[:, c])
                for c, name in enumerate(label_names)]
    return [RocCurve(name, y[:, c], scores[:, c]) for c, name in enumerate(label_names)]


def sections_for_eval(report: "EvalReport") -> list[Section]:
    """Summary table of every run, then per dataset a ROC figure and a PCA embedding.

    ROC, binary: one line per protocol. Multiclass / multilabel: one line per class for the first
    protocol (at most :data:`MAX_ROC_LINES`). Scores are those of the first seed.
    """
    rows = []
    for name, d in report.datasets.items():
        for proto, runs in d.runs.items():
            summary = d.to_json()["protocols"][proto]["summary"]
            for metric in ("macro_auc", "accuracy", "macro_f1"):
                s = summary.get(metric, {})
                ci = runs[0]["ci95"] if runs[0]["ci95"]["metric"] == metric else None
                rows.append({"dataset": name, "protocol": proto, "metric": metric,
                             "mean": s.get("mean"), "std": s.get("std"), "seeds": s.get("n"),
                             "95% CI (first seed)": None if ci is None or ci["lo"] is None
                             else f"[{ci['lo']:.3f}, {ci['hi']:.3f}]"})
    sections: list[Section] = [TableSection("Results (test split)", rows)]
    for name, d in report.datasets.items():
        if not d.test_scores:
            continue
        y = d.test_labels
        if d.task == "binary":
            curves = [RocCurve(proto, np.asarray(y).reshape(len(y)), s)
                      for proto, s in d.test_scores.items()]
            sections.append(RocSection(f"{name}: ROC (test)", curves))
        else:
            proto, scores = next(iter(d.test_scores.items()))
            sections.append(RocSection(f"{name}: ROC per class, {proto} (test)",
                                       _roc_curves(d.task, d.label_names, y, scores)))
        if d.embedding_2d is not None:
            if d.task == "multilabel":
                # Colour by "any finding" since an image can carry several labels.
                colour = (np.nansum(y, axis=1) > 0).astype(int)
                names = ["no label", "any label"]
            else:
                colour, names = np.asarray(y).reshape(len(y)), d.label_names
            sections.append(EmbeddingSection(f"{name}: test features, PCA 2-D", d.embedding_2d,
                                             colour, names))
    return sections
