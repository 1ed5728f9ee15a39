"""Report-style text rendered from a UMS record: the stand-in for reports the data does not have.

The bundled NIH-1000, PneumoniaMNIST, BreastMNIST and HAM10000 images come with labels, not
reports. Methods that need image-text pairs (M-FLAG's alignment, VIVID's free-text ablation arm)
render sentences from the image's UMS record instead. The text carries exactly the label
information and nothing more, so every output that uses it must say so
(:data:`LABEL_DERIVED_NOTE` in ``parts_used``/metadata).

Rendering (deterministic given the ``rng``):

- one sentence per present / uncertain finding, from several templates per state;
- absent findings grouped into one or two negative sentences ("No pneumothorax or effusion."), as
  radiologists list pertinent negatives; each absent finding is dropped with ``absent_drop_p``;
- unanswerable (null) findings are dropped with ``null_drop_p``; the rest say "not assessed";
- ``no_finding`` present becomes a "normal study" sentence, otherwise it is not spoken;
- an optional lead-in naming the modality and view; sentence order shuffled.
"""
from __future__ import annotations

import numpy as np

from medvlp.knowledge.ums import UMSRecord

LABEL_DERIVED_NOTE = "text rendered from labels (no real reports)"

# Finding key -> the phrase a report would use (keys not listed: underscores become spaces).
PHRASES: dict[str, str] = {
    "enlarged_cardiomediastinum": "enlarged cardiomediastinal silhouette",
    "lung_opacity": "airspace opacity", "lung_lesion": "lung lesion",
    "pleural_effusion": "pleural effusion", "pleural_other": "pleural abnormality",
    "support_devices": "support devices", "pleural_thickening": "pleural thickening",
    "degenerative_changes": "degenerative changes",
    # HAM10000 diagnoses
    "actinic_keratosis": "actinic keratosis (intraepithelial carcinoma)",
    "basal_cell_carcinoma": "basal cell carcinoma", "benign_keratosis": "benign keratosis-like lesion",
    "melanocytic_nevus": "melanocytic nevus", "vascular_lesion": "vascular lesion",
    # label names of generic sets (BreastMNIST through vivid_targets.records_for_imageset)
    "malignant": "malignant-appearing lesion", "normal_benign": "normal or benign-appearing tissue",
    "pneumonia": "pneumonia", "normal": "normal appearance",
}

PRESENT = ("{F} is present.", "{F} is seen.", "Findings consistent with {f}.", "Evidence of {f}.",
           "There is {f}.", "Positive for {f}.", "{F} noted.", "Appearance compatible with {f}.")
UNCERTAIN = ("Possible {f}.", "{F} cannot be excluded.", "Findings may represent {f}.",
             "Questionable {f}.", "Equivocal for {f}.", "{F} is suspected but not certain.")
ABSENT = ("No {l}.", "There is no {l}.", "No evidence of {l}.", "Negative for {l}.",
          "{L} not seen.", "No definite {l}.")
NULL = ("{F} not assessed.", "{F} cannot be evaluated on this image.", "{F}: not assessable.")
NORMAL = ("No acute abnormality.", "Normal study.", "No significant abnormality is seen.",
          "Unremarkable examination.")
LEAD = {"cxr": ("Chest radiograph.", "Frontal chest X-ray.", "Chest film."),
        "xray": ("Chest radiograph.", "Frontal chest X-ray.", "Chest film."),
        "dermoscopy": ("Dermoscopic image of a skin lesion.", "Dermoscopy.", "Skin lesion, dermoscopic view."),
        "ultrasound": ("Breast ultrasound.", "Ultrasound image of the breast.", "Sonographic image.")}
VIEW = {"PA": "PA view.", "AP": "AP view.", "LAT": "Lateral view."}


def phrase(key: str) -> str:
    return PHRASES.get(key, key.replace("_", " "))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _fill(template: str, f: str) -> str:
    return template.format(f=f, F=_cap(f))


def _join(items: list[str], rng: np.random.Generator) -> str:
    """"a", "a or b", "a, b or c" / "a, b, or c" (serial comma drawn)."""
    if len(items) == 1:
        return items[0]
    comma = "," if len(items) > 2 and rng.random() < 0.5 else ""
    return ", ".join(items[:-1]) + f"{comma} or " + items[-1]


def render_report(record: UMSRecord, rng: np.random.Generator, *, absent_drop_p: float = 0.0,
                  null_drop_p: float = 1.0) -> str:
    """Report-style sentences for ``record`` (see the module docstring); never empty."""
    for name, p in (("absent_drop_p", absent_drop_p), ("null_drop_p", null_drop_p)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}={p}: expected a probability in [0, 1]")
    sentences: list[str] = []
    absent: list[str] = []
    for key, finding in record.findings.items():
        state = finding.state
        if key == "no_finding":
            if state == "present":
                sentences.append(str(rng.choice(NORMAL)))
            continue
        f = phrase(key)
        if state == "present":
            sentences.append(_fill(str(rng.choice(PRESENT)), f))
        elif state == "uncertain":
            sentences.append(_fill(str(rng.choice(UNCERTAIN)), f))
        elif state == "absent":
            if rng.random() >= absent_drop_p:
                absent.append(f)
        elif rng.random() >= null_drop_p:
            sentences.append(_fill(str(rng.choice(NULL)), f))
    if absent:
        rng.shuffle(absent)
        # One or two negative sentences, as a report lists its pertinent negatives.
        cut = int(rng.integers(1, len(absent))) if len(absent) > 3 and rng.random() < 0.5 else len(absent)
        for group in (absent[:cut], absent[cut:]):
            if group:
                listed = _join(group, rng)
                sentences.append(str(rng.choice(ABSENT)).format(l=listed, L=_cap(listed)))
    order = rng.permutation(len(sentences))
    body = [sentences[i] for i in order]
    lead = []
    leads = LEAD.get((record.modality or "").lower())
    if leads and rng.random() < 0.5:
        lead.append(str(rng.choice(leads)))
    if record.study_view in VIEW and rng.random() < 0.5:
        lead.append(VIEW[record.study_view])
    text = " ".join(lead + body)
    if not body:
        # Every finding was dropped or unanswerable: still a valid, honest sentence for an encoder.
        text = " ".join(lead + ["No findings were assessed for this image."])
    return text
