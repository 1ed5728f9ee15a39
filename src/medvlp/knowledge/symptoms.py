"""Visual symptoms per class (ViP's Visual Symptom Generator, METHODS.md 2.1).

Stage 1 asks an LLM, with ViP's prompt pattern (modality, category, simple words, never the
category name), for K visual symptoms per class. Stage 2 keeps only symptoms the images support:

* with a vision-language teacher (``vqa(image_grid, question) -> answer``) over image grids of
  the class: a symptom holds on a grid when the answer starts with "yes";
* otherwise with a dual encoder passed as ``score(images, texts) -> (N_img, N_txt)``
  similarities: symptom ``s`` of class ``c`` holds on an image of ``c`` when its similarity
  exceeds ``tau_s``, the median similarity of ``s`` over the images of the *other* classes.

The support of a symptom is the fraction of its class's images (or grids) on which it holds;
the final set is the intersection of the LLM's list with the symptoms whose support is at least
``min_support``. Curated, versioned sets ship for the bundled tasks (``symptoms_data/``).
"""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from pydantic import Field

from medvlp.config import StrictConfig
from medvlp.errors import DataError
from medvlp.knowledge.teachers.base import AnswerError, Teacher, TeacherError, extract_json
from medvlp.knowledge.teachers.cache import AnswerCache, cache_key

ScoreFn = Callable[[Any, Sequence[str]], np.ndarray]
VQAFn = Callable[[np.ndarray, str], str]


class SymptomSet(StrictConfig):
    """Per-class visual symptoms of one task, as written to / read from JSON."""

    task: str
    version: str
    modality: str
    source: str
    notes: str = ""
    classes: dict[str, list[str]]
    support: dict[str, dict[str, float]] = Field(default_factory=dict)


def list_symptom_sets() -> list[str]:
    """Names of the curated sets shipped with medvlp."""
    folder = resources.files("medvlp.knowledge") / "symptoms_data"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_symptoms(task_or_path: str | Path) -> SymptomSet:
    """A curated set by task name (see :func:`list_symptom_sets`) or a JSON file path."""
    p = Path(task_or_path)
    if not p.is_file():
        name = str(task_or_path)
        if name not in list_symptom_sets():
            raise DataError(p, "no such symptom file or curated task",
                            f"a JSON path or one of {list_symptom_sets()}")
        p = Path(str(resources.files("medvlp.knowledge") / "symptoms_data" / f"{name}.json"))
    try:
        sset = SymptomSet.model_validate_json(p.read_text())
    except ValueError as e:
        raise DataError(p, f"invalid symptom file ({e})", "a SymptomSet JSON") from e
    for cls, items in sset.classes.items():
        check_symptoms(items, list(sset.classes), path=str(p), record=cls)
    return sset


def _name_words(name: str) -> list[str]:
    return [w for w in re.split(r"[\s_\-/]+", name.lower()) if len(w) > 2]


def check_symptoms(symptoms: Sequence[str], class_names: Sequence[str], *, path: str | None = None,
                   record: str | None = None) -> None:
    """ViP's rule: a symptom describes what is seen and never names a category."""
    if not symptoms:
        raise DataError(path, "no symptoms", "at least one symptom per class", record=record)
    for s in symptoms:
        if not isinstance(s, str) or not s.strip():
            raise DataError(path, f"symptom {s!r} is empty or not text", "short phrases", record=record)
        low = s.lower()
        for name in class_names:
            for word in _name_words(name):
                if re.search(rf"\b{re.escape(word)}\b", low):
                    raise DataError(path, f"symptom {s!r} names the category {name!r}",
                                    "visual features in simple words, no category name",
                                    record=record)


def symptom_prompt(category: str, modality: str, k: int = 4, error: str | None = None) -> str:
    """ViP's VSG question pattern for one category."""
    text = (f"What are useful visual features for distinguishing {category.replace('_', ' ')} in a "
            f"{modality} image? List the {k} most typical visual symptoms a reader could see in "
            f"the image. Describe each in simple words, as short phrases, and do not use the name "
            f"of the category. Answer with JSON only: {{\"symptoms\": [\"...\", ...]}}.")
    if error:
        text += f"\nYour previous answer was invalid: {error}. Answer again."
    return text


def _symptom_schema(k: int) -> dict[str, Any]:
    return {"type": "object", "properties": {"symptoms": {"type": "array", "items": {"type": "string"},
            "minItems": 1, "maxItems": k}}, "required": ["symptoms"], "additionalProperties": False}


def generate_symptoms(teacher: Teacher, classes: Sequence[str], modality: str, k: int = 4, *,
                      cache: AnswerCache | None = None, max_attempts: int = 3) -> dict[str, list[str]]:
    """Stage 1: ask the LLM for ``k`` symptoms per class; invalid answers are retried with the
    error, and a class that never gets a valid answer raises (no symptom is invented)."""
    schema = _symptom_schema(k)
    out: dict[str, list[str]] = {}
    for cls in classes:
        error: str | None = None
        for _ in range(max_attempts):
            prompt = symptom_prompt(cls, modality, k, error)
            key = cache_key(teacher.name, prompt, schema)
            text = cache.get(key) if cache is not None else None
            if text is None:
                try:
                    text = teacher.generate(prompt, schema)
                except TeacherError as e:
                    error = f"teacher error: {e}"
                    continue
                if cache is not None:
                    cache.put(key, teacher.name, text)
            try:
                obj = extract_json(text)
                items = obj.get("symptoms") if isinstance(obj, dict) else None
                if not isinstance(items, list) or not items:
                    raise AnswerError('expected {"symptoms": [non-empty list of strings]}')
                items = [str(s).strip() for s in items][:k]
                check_symptoms(items, classes, record=cls)
            except (AnswerError, DataError) as e:
                error = str(e)
                continue
            out[cls] = items
            break
        else:
            raise TeacherError(f"no valid symptoms for class {cls!r} after {max_attempts} "
                               f"attempts; last: {error}")
    return out


def similarity_support(symptoms: Mapping[str, Sequence[str]], images: Any, labels: Sequence[str],
                       score: ScoreFn) -> dict[str, dict[str, float]]:
    """Support of every symptom from a dual encoder (see module docstring for the rule).

    ``images``: anything ``score`` accepts with N items; ``labels``: the N class names.
    """
    labels = np.asarray([str(x) for x in labels])
    texts = [s for cls in symptoms for s in symptoms[cls]]
    sims = np.asarray(score(images, texts), dtype=np.float64)
    if sims.shape != (len(labels), len(texts)):
        raise DataError(None, f"score() returned shape {sims.shape}",
                        f"({len(labels)}, {len(texts)}) = (N_img, N_txt)")
    support: dict[str, dict[str, float]] = {}
    col = 0
    for cls, items in symptoms.items():
        own, other = labels == cls, labels != cls
        if not own.any() or not other.any():
            raise DataError(None, f"class {cls!r} has {int(own.sum())} images and the other "
                            f"classes {int(other.sum())}", "images of the class and of others")
        support[cls] = {}
        for s in items:
            tau = float(np.median(sims[other, col]))
            support[cls][s] = float(np.mean(sims[own, col] > tau))
            col += 1
    return support


def make_grid(images: np.ndarray, rows: int = 2, cols: int = 2) -> np.ndarray:
    """Tile up to rows*cols images (N,H,W[,C]) into one grid image (missing tiles black)."""
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    grid = np.zeros((rows * h, cols * w) + images.shape[3:], dtype=images.dtype)
    for i in range(min(n, rows * cols)):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = images[i]
    return grid


def vqa_support(symptoms: Mapping[str, Sequence[str]], grids: Mapping[str, Sequence[np.ndarray]],
                vqa: VQAFn) -> dict[str, dict[str, float]]:
    """Support of every symptom from a vision-language teacher over image grids of its class."""
    support: dict[str, dict[str, float]] = {}
    for cls, items in symptoms.items():
        class_grids = grids.get(cls) or []
        if not class_grids:
            raise DataError(None, f"no image grid for class {cls!r}", "at least one grid per class")
        support[cls] = {}
        for s in items:
            q = f"Do these images show: {s}? Answer yes or no."
            yes = [str(vqa(g, q)).strip().lower().startswith("yes") for g in class_grids]
            support[cls][s] = float(np.mean(yes))
    return support


def intersect(stage1: Mapping[str, Sequence[str]], support: Mapping[str, Mapping[str, float]],
              min_support: float = 0.5) -> dict[str, list[str]]:
    """Stage-1 symptoms that stage 2 supports on at least ``min_support`` of the class's images,
    in stage-1 order. A class left with none raises: the caller must lower ``min_support`` or
    revise the symptoms rather than train on an empty class description."""
    out: dict[str, list[str]] = {}
    for cls, items in stage1.items():
        kept = [s for s in items if support.get(cls, {}).get(s, 0.0) >= min_support]
        if not kept:
            raise DataError(None, f"no symptom of class {cls!r} reaches support {min_support} "
                            f"(support: {dict(support.get(cls, {}))})",
                            "at least one image-supported symptom per class")
        out[cls] = kept
    return out


def run_symptoms(output_path: str | Path, task: str | None = None, *,
                 classes: Sequence[str] | None = None, modality: str | None = None,
                 teacher: Teacher | None = None, k: int = 4, images: Any = None,
                 labels: Sequence[str] | None = None, score: ScoreFn | None = None,
                 grids: Mapping[str, Sequence[np.ndarray]] | None = None, vqa: VQAFn | None = None,
                 min_support: float = 0.5, cache_path: str | Path | None = None) -> dict[str, Any]:
    """Produce a symptom set and write it as JSON; returns the written dict.

    Without a teacher the curated set of ``task`` is the stage-1 list; with one, ``classes`` and
    ``modality`` are asked about. Stage 2 runs when ``vqa`` + ``grids`` (preferred) or ``score``
    + ``images`` + ``labels`` are given; its supports are written beside the symptoms.
    """
    if teacher is None:
        if task is None:
            raise DataError(None, "neither a teacher nor a curated task given",
                            f"teacher=... or task in {list_symptom_sets()}")
        base = load_symptoms(task)
        stage1, modality, source, version = base.classes, base.modality, "curated", base.version
    else:
        if not classes or not modality:
            raise DataError(None, "a teacher needs classes and modality", "classes=[...], modality='...'")
        cache = AnswerCache(cache_path) if cache_path else None
        try:
            stage1 = generate_symptoms(teacher, classes, modality, k, cache=cache)
        finally:
            if cache is not None:
                cache.close()
        source, version = f"teacher:{teacher.name}", "generated"
    support: dict[str, dict[str, float]] = {}
    if vqa is not None and grids is not None:
        support = vqa_support(stage1, grids, vqa)
        source += "+vqa"
    elif score is not None and images is not None and labels is not None:
        support = similarity_support(stage1, images, labels, score)
        source += "+dual-encoder"
    final = intersect(stage1, support, min_support) if support else {c: list(v) for c, v in stage1.items()}
    result = SymptomSet(task=task or "custom", version=version, modality=str(modality),
                        source=source, notes=f"min_support={min_support}" if support else "",
                        classes=final, support=support)
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = result.model_dump()
    out.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    return data
