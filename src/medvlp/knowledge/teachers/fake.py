"""A deterministic fake teacher for tests and dry runs."""
from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from medvlp.knowledge.teachers.base import REPORT_CLOSE, REPORT_OPEN


class FakeTeacher:
    """Answers from a script (a list of texts, cycled in order, or a function of the prompt).

    With no script it answers like the rule labeler would on the report inside the prompt,
    which gives a deterministic second opinion for agreement demos. Every prompt is kept in
    ``prompts`` so tests can check what was asked (e.g. that a retry carried the error).
    """

    concurrency = 1

    def __init__(self, script: Sequence[str] | Callable[[str], str] | None = None,
                 name: str = "fake"):
        self.name = name
        self._script = script
        self.prompts: list[str] = []

    def generate(self, prompt: str, schema: dict[str, Any]) -> str:
        self.prompts.append(prompt)
        if callable(self._script):
            return self._script(prompt)
        if self._script is not None:
            return self._script[(len(self.prompts) - 1) % len(self._script)]
        from medvlp.knowledge.labeler import label_report

        report = prompt.split(REPORT_OPEN, 1)[1].split(REPORT_CLOSE, 1)[0]
        record = label_report(text=report)
        wanted = schema["properties"]["findings"]["required"]
        return json.dumps({"findings": {f: record.findings[f].state if f in record.findings
                                        else None for f in wanted},
                           "laterality": record.laterality})
