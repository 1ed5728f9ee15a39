"""LLM teachers behind one protocol: OpenAI-compatible HTTP, local Hugging Face, fake."""
from medvlp.knowledge.teachers.base import (AnswerError, Teacher, TeacherError, TeacherStats,
                                            answer_schema, build_prompt, extract_json,
                                            parse_answer, structure_with_teacher)
from medvlp.knowledge.teachers.cache import AnswerCache, cache_key
from medvlp.knowledge.teachers.fake import FakeTeacher
from medvlp.knowledge.teachers.hf_local import HFLocalTeacher
from medvlp.knowledge.teachers.openai_compat import OpenAICompatTeacher
from medvlp.knowledge.teachers.privacy import PrivacyError, check_endpoint, is_loopback_url

__all__ = ["AnswerCache", "AnswerError", "FakeTeacher", "HFLocalTeacher", "OpenAICompatTeacher",
           "PrivacyError", "Teacher", "TeacherError", "TeacherStats", "answer_schema",
           "build_prompt", "cache_key", "check_endpoint", "extract_json", "is_loopback_url",
           "parse_answer", "structure_with_teacher"]
