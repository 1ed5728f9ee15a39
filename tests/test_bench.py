import json
from pathlib import Path

import pytest

from medvlp.bench import SUITES, run_suite, to_markdown

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_committed_quick_results_render_every_row():
    path = RESULTS / "quick.json"
    if not path.is_file():
        pytest.skip("no committed quick results")
    result = json.loads(path.read_text())
    table = to_markdown(result)
    assert "engine img/s" in table and "nan" not in table
    rows = [r for r in result["quality"]["rows"] if "excluded" not in r]
    assert all("macro_auc" in (r.get("metrics") or {}) or "summary" in r for r in rows)


def test_unknown_suite_names_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="quick"):
        run_suite("nope", tmp_path)
    assert {"quick", "full", "structuring"} <= set(SUITES)
