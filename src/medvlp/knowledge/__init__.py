"""medvlp.knowledge: UMS schema and compilers, the offline report labeler, LLM teachers,
batch structuring and visual symptoms."""
from medvlp.knowledge.compilers import (LabelMapping, compile_chexpert, compile_ham10000,
                                        compile_nih, compile_pneumoniamnist, compile_table,
                                        compile_with_mapping, load_mapping)
from medvlp.knowledge.labeler import label_report
from medvlp.knowledge.structure import (agreement, benchmark_structuring, cohen_kappa,
                                        read_ums_jsonl, run_structure)
from medvlp.knowledge.symptoms import (SymptomSet, generate_symptoms, intersect,
                                       list_symptom_sets, load_symptoms, run_symptoms,
                                       similarity_support, vqa_support)
from medvlp.knowledge.ums import (CXR_FINDINGS, HAM10000_FINDINGS, SCHEMA_VERSION, UMSRecord,
                                  VerificationError, build_record, canonical_json, parse_record,
                                  render_target, verify)

__all__ = [
    "CXR_FINDINGS", "HAM10000_FINDINGS", "LabelMapping", "SCHEMA_VERSION", "SymptomSet",
    "UMSRecord", "VerificationError", "agreement", "benchmark_structuring", "build_record",
    "canonical_json", "cohen_kappa", "compile_chexpert", "compile_ham10000", "compile_nih",
    "compile_pneumoniamnist", "compile_table", "compile_with_mapping", "generate_symptoms",
    "intersect", "label_report", "list_symptom_sets", "load_mapping", "load_symptoms",
    "parse_record", "read_ums_jsonl", "render_target", "run_structure", "run_symptoms",
    "similarity_support", "verify", "vqa_support",
]
