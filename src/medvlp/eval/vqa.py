"""VQA metrics: closed-ended accuracy by M3D's letter rule, open-ended BLEU/ROUGE.

Closed-ended (multiple choice) answers are scored as in M3D's ``Bench/eval/eval_vqa.py``: the
generation is correct when the string ``"<letter>."`` of the right choice (``"B."``) occurs in
it. Generations that contain no ``"<letter>."`` at all fall back to exact match (after
lower-casing and stripping punctuation) against the choice text or the bare letter; which rule
decided is counted so a report can say how many answers relied on the fallback.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from medvlp.eval.nlg import nlg_metrics

_LETTER_DOT = re.compile(r"\b[A-H]\.")


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", text.lower()).strip()


def closed_correct(prediction: str, letter: str, choice_text: str) -> tuple[bool, str]:
    """``(correct, rule)`` with rule ``"letter"`` (M3D) or ``"exact"`` (fallback)."""
    if not re.fullmatch(r"[A-H]", letter):
        raise ValueError(f"closed VQA answer letter {letter!r}: expected one capital letter A-H")
    if _LETTER_DOT.search(prediction):
        return f"{letter}." in prediction, "letter"
    p = _norm(prediction)
    return p in (_norm(choice_text), letter.lower()), "exact"


def closed_vqa_accuracy(predictions: Sequence[str], letters: Sequence[str],
                        choice_texts: Sequence[str]) -> dict[str, float]:
    """Accuracy over closed questions; ``exact_fallback`` = share decided by the fallback rule."""
    if not (len(predictions) == len(letters) == len(choice_texts)):
        raise ValueError(f"closed_vqa_accuracy: {len(predictions)} predictions, {len(letters)} "
                         f"letters, {len(choice_texts)} choice texts: expected equal lengths")
    if not predictions:
        raise ValueError("closed_vqa_accuracy: no predictions")
    results = [closed_correct(p, a, t) for p, a, t in zip(predictions, letters, choice_texts)]
    n = len(results)
    return {"accuracy": sum(ok for ok, _ in results) / n,
            "exact_fallback": sum(rule == "exact" for _, rule in results) / n, "n": n}


def open_vqa_metrics(predictions: Sequence[str], answers: Sequence[str]) -> dict[str, float]:
    """BLEU-1/4, ROUGE-1/L (M3D's open-ended VQA metrics) plus normalised exact match."""
    out = nlg_metrics(predictions, answers)
    out["exact_match"] = sum(_norm(p) == _norm(a) for p, a in zip(predictions, answers)) / len(answers)
    return out


REPORT_PROMPT = "Write a short structured report for this CT sub-volume."


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


# Generation budgets per item type: longer than every target of that type in the derived sets.
MAX_NEW_TOKENS = {"closed": 32, "open": 64}


def evaluate_ct_items(method, data, items, *, batch_size: int = 32, max_new_tokens: int = 64) -> dict:
    """Generate for CT items (``medvlp.data.ct_vqa.CTItem``) and score them by task:
    closed -> letter accuracy, open -> BLEU/ROUGE/exact, report -> BLEU/ROUGE; per source too.
    ``max_new_tokens`` bounds reports; closed/open answers use :data:`MAX_NEW_TOKENS` (if smaller)."""
    import numpy as np
    import torch

    preds: list[str] = [""] * len(items)
    for task in ("closed", "open", "report"):
        idx = [i for i, it in enumerate(items) if it.task == task]
        budget = min(max_new_tokens, MAX_NEW_TOKENS.get(task, max_new_tokens))
        for sl in _batches(len(idx), batch_size):
            chunk = [items[i] for i in idx[sl]]
            vol = torch.from_numpy(np.stack([data.volumes[it.volume] for it in chunk]))
            for i, p in zip(idx[sl], method.generate(vol, [it.prompt() for it in chunk], max_new_tokens=budget)):
                preds[i] = p
    out: dict = {"n_items": len(items)}
    for source in sorted({it.source for it in items}):
        res: dict = {}
        for task in ("closed", "open", "report"):
            idx = [i for i, it in enumerate(items) if it.task == task and it.source == source]
            if not idx:
                continue
            p = [preds[i] for i in idx]
            if task == "closed":
                res[task] = closed_vqa_accuracy(p, [items[i].letter for i in idx], [items[i].choice_text for i in idx])
            elif task == "open":
                res[task] = open_vqa_metrics(p, [items[i].answer for i in idx])
            else:
                res[task] = nlg_metrics(p, [items[i].answer for i in idx])
            res[task]["examples"] = [{"prompt": items[i].prompt(), "target": items[i].answer, "output": preds[i]}
                                     for i in idx[:3]]
        out[source] = res
    return out


def run_ct_eval(model_folder, task: str = "vqa", volume=None, question: str | None = None,
                data_root=None, *, limit: int | None = None) -> dict:
    """Evaluate or query a ct3d model folder (``medvlp pretrain --method ct3d``).

    ``volume`` given (NIfTI file, DICOM file or DICOM folder): answer ``question`` (task ``vqa``)
    or write a report (task ``report``) for it. ``volume`` None: score the test split of the
    label-derived CT VQA/report set under ``data_root`` (``limit`` items per task and source at most).
    """
    from pathlib import Path

    import torch

    from medvlp.data.ct_vqa import DERIVED_NOTE, build_ct_vqa, prepare_volume
    from medvlp.errors import ConfigError
    from medvlp.methods.ct3d import RECONSTRUCTION_NOTE, load_model

    if task not in ("vqa", "report"):
        raise ConfigError(f"task={task!r}; expected 'vqa' or 'report'")
    method = load_model(model_folder)
    opts = method.opts
    img = method.backbone.img_size
    shape = (opts.slices, img, img)
    info = {"model": str(model_folder), "task": task, "lm": method.lm.source, "note": RECONSTRUCTION_NOTE}
    if volume is not None:
        if task == "vqa" and not question:
            raise ConfigError("task 'vqa' with a volume needs a question")
        prompt_q = question if task == "vqa" else (question or REPORT_PROMPT)
        vol = torch.from_numpy(prepare_volume(volume, shape=shape))[None]
        answer = method.generate(vol, [f"{prompt_q} Answer:"], max_new_tokens=opts.max_answer_tokens)[0]
        return {**info, "volume": str(Path(volume)), "volume_shape": list(shape), "question": prompt_q,
                "answer": answer, "training_text": DERIVED_NOTE}
    data = build_ct_vqa(data_root, shape=shape, sources=tuple(opts.sources), seed=0, limit_train=0)
    tasks = ("closed", "open") if task == "vqa" else ("report",)
    items = []
    for t in tasks:
        for source in opts.sources:
            sel = [it for it in data.split_items("test", (t,)) if it.source.startswith(source[:5])]
            items += sel[:limit] if limit else sel
    return {**info, "results": evaluate_ct_items(method, data, items, max_new_tokens=opts.max_answer_tokens),
            "text": DERIVED_NOTE}
