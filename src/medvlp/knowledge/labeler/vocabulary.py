"""Finding vocabulary of the offline chest X-ray labeler: mention patterns with synonyms, and the
"normal statements" that imply a finding is absent without naming it.

Patterns are matched on lower-cased sentences in which ``XXXX`` has become ``xxxx``. Tuned on the
IU X-ray (Open-i) reports; the mention lists follow the spirit of the CheXpert labeler's phrase
lists (which we do not copy) and add IU's frequent incidental findings.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_W = r"(?:[\w-]+ ){0,%d}"  # up to N filler words, e.g. "heart size is mildly enlarged"


def _gap(n: int) -> str:
    return _W % n


@dataclass(frozen=True)
class Mention:
    """A pattern naming a finding; ``hedged`` marks phrases uncertain by themselves
    (e.g. costophrenic blunting suggests but does not prove an effusion)."""

    finding: str
    pattern: re.Pattern[str]
    hedged: bool = False


def _m(finding: str, *patterns: str, hedged: bool = False) -> list[Mention]:
    return [Mention(finding, re.compile(p), hedged) for p in patterns]


_HEART = r"(?:heart|cardiac(?: silhouette| shadow| contours?| size)?|heart size|cardiac silhouette)"
_ENLARGED = r"(?:enlarged|enlargement|large|increased|prominent)"

MENTIONS: list[Mention] = [
    *_m("cardiomegaly", r"\bcardiomegaly\b", r"\bcardiac enlargement\b",
        r"\benlarge(?:d|ment of the) (?:heart|cardiac)", r"\bcardiomyopathy\b",
        rf"\b{_HEART} (?:size )?(?:is |are |appears |remains |was |has )?{_gap(3)}{_ENLARGED}\b"),
    *_m("enlarged_cardiomediastinum", r"\benlarged cardiomediastin", r"\bwidened mediastinum\b",
        r"\bmediastinal (?:widening|enlargement|prominence|mass|lymphadenopathy)\b",
        r"\bwidening of the mediastinum\b",
        r"\bprominen(?:ce|t) (?:of )?(?:the )?(?:\w+ )?mediastin",
        rf"\b(?:cardio ?)?mediastinal (?:silhouette|contours?) (?:is |are |appears? )?{_gap(2)}"
        r"(?:enlarged|widened|prominent)\b"),
    *_m("lung_opacity", r"\bopaci(?:ty|ties|fication|fied)\b", r"(?<!bone )(?<!soft tissue )(?<!calcific )(?<!calcified )(?<!osseous )(?<!metallic )"
        r"\bdensit(?:y|ies)\b",
        r"\bair ?space (?:disease|process|opacit)", r"\binfiltrat", r"\bhaziness\b", r"\bhazy\b",
        r"\b(?:increased|prominent|coarse|accentuated|coarsened) (?:\w+ )?(?:interstitial|lung|"
        r"pulmonary|bronchovascular) markings\b", r"\binterstitial (?:disease|prominence|"
        r"opacit|accentuation|thickening|process|pattern)"),
    *_m("lung_lesion", r"\b(?:lung|pulmonary) lesions?\b", r"\bmass(?:es)?\b", r"\bnodul(?:e|es|ar)\b",
        r"\btumou?rs?\b", r"\bneoplas", r"\bmalignan", r"\bmetasta", r"\bcarcinoma\b",
        r"\bcavitary lesion"),
    *_m("edema", r"\bedema\b", r"\boedema\b", r"\bcongestive heart failure\b", r"\bchf\b",
        r"\bheart failure\b", r"\b(?:vascular|venous|pulmonary) congestion\b",
        r"\bcephalization\b", r"\bkerley"),
    *_m("consolidation", r"\bconsolidat"),
    *_m("pneumonia", r"\bpneumoni(?:a|as|tis)\b", r"\bbronchopneumonia\b", r"\binfectio(?:n|us)\b",
        r"\binflammatory (?:process|change)"),
    *_m("atelectasis", r"\batelecta", r"\b(?:lobar|lobe|lung) collapse\b",
        r"\bcollapse of the (?:\w+ ){0,3}(?:lobe|lung)\b"),
    *_m("pneumothorax", r"\bpneumothora(?:x|ces)\b", r"\bhydropneumothorax\b"),
    *_m("pleural_effusion", r"(?<!pericardial )\beffusions?\b", r"\bhydrothorax\b",
        r"\bpleural fluid\b"),
    *_m("pleural_effusion", r"\bcostophrenic (?:\w+ )?(?:angles? )?(?:xxxx )?blunting\b",
        r"\bblunting of the (?:\w+ ){0,3}(?:costophrenic|sulcus|sulci)", r"\bblunt(?:ed|ing)\b",
        hedged=True),
    *_m("pleural_other", r"\bpleural (?:\w+ )?(?:thickening|plaques?|scarring|calcification)",
        r"\bthickening of the pleura\b", r"\bapical (?:pleural )?(?:cap|capping)\b",
        r"\bfibrothorax\b", r"\bpleural (?:parenchymal )?scar"),
    *_m("fracture", r"\bfractur"),
    *_m("support_devices", r"\bpacemaker", r"\bdefibrillator", r"\baicd\b", r"\bicd\b",
        r"\bpicc\b", r"\bport-?a-?cath", r"\b(?:central venous|venous|central) (?:line|catheter)",
        r"\bcatheters?\b", r"\b(?:endotracheal|tracheostomy|nasogastric|orogastric|enteric|"
        r"feeding|chest|et|ng|og) tubes?\b", r"\btracheostomy\b", r"\bsternotomy\b",
        r"\bsternal (?:wires|sutures)\b", r"\bwires?\b", r"\b(?:pacer|pacemaker|icd|aicd|cardiac|transvenous) leads?\b", r"\bstents?\b",
        r"\bclips?\b", r"\bhardware\b", r"\bprosthe", r"\bvalve replacement", r"\bdevices?\b",
        r"\bpledgets?\b", r"\bsutures?\b", r"\bshunt\b"),
    *_m("infiltration", r"\binfiltrat"),
    *_m("mass", r"\bmass(?:es)?\b", r"\btumou?rs?\b"),
    *_m("nodule", r"\bnodul(?:e|es|ar)\b", r"\bnodular (?:densit|opacit)"),
    *_m("emphysema", r"(?<!subcutaneous )\bemphysema", r"\bcopd\b",
        r"\bchronic obstructive (?:pulmonary|lung)", r"\bbullae\b", r"\bbullous\b"),
    *_m("fibrosis", r"\bfibros", r"\bfibrotic\b", r"(?<!pleural )(?<!pleural parenchymal )"
        r"\bscar(?:s|ring|red)?\b", r"\binterstitial lung disease\b", r"\bhoneycomb"),
    *_m("pleural_thickening", r"\bpleural (?:\w+ )?thickening\b", r"\bthickening of the pleura\b",
        r"\bapical (?:pleural )?(?:cap|capping)\b", r"\bpleural (?:parenchymal )?scar"),
    *_m("hernia", r"\bhernia", r"\bbochdalek\b", r"\bmorgagni\b"),
    *_m("granuloma", r"\bgranulom"),
    *_m("calcification", r"\bcalcifi", r"\bcalcific\b"),
    *_m("scoliosis", r"\bscolio", r"\b(?:dextro|levo)(?:convex|scoliosis|curvature)",
        r"\bcurvature of the (?:\w+ ){0,2}spine\b", r"\b(?:spinal|thoracic) curvature\b"),
    *_m("hyperinflation", r"\bhyperinflat", r"\bhyperexpan", r"\bover ?inflat", r"\bhyperaera",
        r"\bhyperlucen", r"\bflatten(?:ed|ing) (?:of )?(?:the )?(?:\w+ )?(?:hemi)?diaphragm"),
    *_m("degenerative_changes", r"\bdegenerat", r"\bspondylo(?:sis|tic)\b", r"\bosteophyt",
        r"\bspurring\b", r"\bspurs?\b", r"\barthriti", r"\barthropath", r"\bosteoarthr",
        r"\bdish\b", r"\bdisc (?:space )?narrowing\b"),
]

#: Findings that do not make a study abnormal for ``no_finding`` (CheXpert: devices do not).
NOT_PATHOLOGY = frozenset({"support_devices", "no_finding"})

_NORMAL = r"(?:normal|within normal limits|unremarkable|upper limits? of normal|not enlarged)"
# The gap between an organ word and "normal" may not contain a word that says the opposite.
_CLEAN_GAP = r"(?:(?!enlarg|large|prominen|increas|cardiomegaly|borderline|widen|but)[^.;]){0,45}?"


@dataclass(frozen=True)
class NormalStatement:
    """A phrase that, unless negated, implies ``findings`` are absent (weaker than a mention)."""

    pattern: re.Pattern[str]
    findings: tuple[str, ...]


def _n(pattern: str, *findings: str) -> NormalStatement:
    return NormalStatement(re.compile(pattern), findings)


_AIRSPACE = ("consolidation", "lung_opacity", "pneumonia", "infiltration", "edema")
_ACUTE = ("pneumonia", "consolidation", "edema", "pneumothorax", "pleural_effusion")

NORMAL_STATEMENTS: list[NormalStatement] = [
    _n(rf"\b(?:heart|cardiac)(?: size| silhouettes?| shadow| contours?)?\b{_CLEAN_GAP}\b{_NORMAL}",
       "cardiomegaly"),
    _n(r"\bnormal (?:[\w-]+ ){0,2}(?:heart|cardiac)\b", "cardiomegaly"),
    _n(r"\bheart (?:is )?normal in size\b", "cardiomegaly"),
    _n(rf"\bcardio ?mediastinal (?:silhouette|contours?|structures)\b{_CLEAN_GAP}\b"
       rf"(?:{_NORMAL}|stable|clear)", "cardiomegaly", "enlarged_cardiomediastinum"),
    _n(r"\bnormal (?:[\w-]+ ){0,2}cardio ?mediastinal\b", "cardiomegaly", "enlarged_cardiomediastinum"),
    _n(rf"\bmediastin(?:al|um)(?: and hilar)?(?: contours?| silhouettes?| structures)?\b{_CLEAN_GAP}\b"
       rf"{_NORMAL}", "enlarged_cardiomediastinum"),
    _n(r"\bnormal (?:[\w-]+ ){0,3}mediastin", "enlarged_cardiomediastinum"),
    _n(r"\blungs? (?:parenchyma )?(?:are |is |appear |appears |remain |remains )?(?:[\w-]+ ){0,3}clear\b",
       *_AIRSPACE),
    _n(r"\bclear (?:[\w-]+ ){0,2}lungs?\b", *_AIRSPACE),
    _n(r"\b(?:lungs?|lung fields?) (?:are |is )?(?:[\w-]+ ){0,2}(?:normal|unremarkable)\b", *_AIRSPACE),
    _n(r"\bno (?:xxxx |evidence of |signs? of )?(?:acute|active) (?:[\w-]+ ){0,2}(?:cardiopulmonary|"
       r"pulmonary|lung|chest|intrathoracic)? ?(?:disease|abnormalit|process|findings?|pathology)",
       *_ACUTE),
    _n(r"\bnegative for acute\b", *_ACUTE),
    _n(r"\bnormal (?:chest|study|examination|exam|radiograph)\b", *_ACUTE),
    _n(r"\bno (?:xxxx )?(?:evidence of )?active disease\b", *_ACUTE),
    _n(r"\b(?:osseous|bony|skeletal|bone) structures?\b[^.;]{0,40}?\b(?:intact|normal|unremarkable|"
       r"without acute abnormalit|no acute)", "fracture"),
    _n(r"\bno acute (?:osseous|bony|bone|skeletal) (?:abnormalit|findings?|injur|process)",
       "fracture"),
    _n(r"\bribs? (?:are )?intact\b", "fracture"),
    _n(r"\blungs? (?:are |is )?(?:normally|well|fully) (?:inflated|expanded|aerated)\b",
       "hyperinflation"),
    _n(r"\bwell[- ]expanded\b", "hyperinflation"),
    _n(r"\bnormal lung volumes?\b", "hyperinflation"),
    _n(r"\bpleural spaces? (?:are |is )?(?:[\w-]+ ){0,2}(?:clear|normal|unremarkable)", "pleural_effusion",
       "pneumothorax"),
    _n(r"\bpulmonary vascula(?:ture|rity)\b[^.;]{0,40}?\b(?:normal|within normal limits|"
       r"unremarkable)", "edema"),
]
