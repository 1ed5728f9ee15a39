"""Field-query training (VIVID-Med, METHODS.md 1.3): each sample asks for k answerable fields.

Per sample: k ~ U{k_min..k_max} fields among the record's *answerable* findings; with probability
``focus_p`` one of them is forced to be a "focus" (rare) label when the record answers one. The
target JSON then holds only these fields and the prompt lists them with the output format.

Choices (documented in docs/vivid.md): the sampled fields keep the record's canonical order (the
target's shape stays predictable); a record with fewer than k answerable fields gives all of them;
one with none gives ``[]`` and the caller decides (VIVID falls back to the full target, whose null
states answerability masking down-weights).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medvlp.errors import ConfigError
from medvlp.knowledge.ums import UMSRecord, _finding_order

#: The reference code's focus labels (Fracture, Pneumonia, Lung Lesion, Cardiomegaly, Enlarged
#: Cardiomediastinum) as UMS keys.
FOCUS_FINDINGS: tuple[str, ...] = ("fracture", "pneumonia", "lung_lesion", "cardiomegaly",
                                   "enlarged_cardiomediastinum")
DEFAULT_PROMPT = "Generate a structured medical report:\n"


def sample_fields(record: UMSRecord, rng: np.random.Generator, *, k_min: int = 4, k_max: int = 6,
                  focus: Sequence[str] = FOCUS_FINDINGS, focus_p: float = 0.6,
                  candidates: Sequence[str] | None = None) -> list[str]:
    """The queried finding names, in canonical order. ``candidates`` restricts the pool (e.g. the
    training vocabulary); only answerable findings are ever drawn."""
    if not 1 <= k_min <= k_max:
        raise ConfigError(f"field query: k range [{k_min}, {k_max}] must satisfy 1 <= k_min <= k_max")
    if not 0.0 <= focus_p <= 1.0:
        raise ConfigError(f"field query: focus_p={focus_p} must be in [0, 1]")
    pool = [n for n in (candidates if candidates is not None else record.findings)
            if n in record.findings and record.answerability.get(n, False)]
    k = int(rng.integers(k_min, k_max + 1))
    if len(pool) <= k:
        return _finding_order(pool)
    chosen: list[str] = []
    focus_pool = [n for n in pool if n in set(focus)]
    if focus_pool and rng.random() < focus_p:
        chosen.append(focus_pool[int(rng.integers(len(focus_pool)))])
    rest = [n for n in pool if n not in chosen]
    chosen += [rest[i] for i in rng.choice(len(rest), size=k - len(chosen), replace=False)]
    return _finding_order(chosen)


def field_query_prompt(fields: Sequence[str], modality: str | None = "CXR") -> str:
    """The prompt listing the queried fields and the output format (reference ``train_cxr.py``).
    Findings carry only ``state`` (no ``score`` key), matching :func:`ums.render_target`."""
    names = ", ".join(fields)
    return (f"Generate a structured {modality or 'medical'} report as JSON with keys modality, "
            f"findings and study_view. Findings to report: {names}. Each finding is "
            '{"state": present|absent|uncertain|null}; study_view is AP, PA, LAT or null.\n')
