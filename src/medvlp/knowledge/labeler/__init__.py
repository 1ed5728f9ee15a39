"""Offline, rule-based chest X-ray report labeler (sections, NegEx scopes, vocabulary)."""
from medvlp.knowledge.labeler.labeler import LABELER_VERSION, label_report, label_sentences

__all__ = ["LABELER_VERSION", "label_report", "label_sentences"]
