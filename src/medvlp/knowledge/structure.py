"""Batch structuring: a CSV/JSONL of reports in, UMS JSONL out (``medvlp structure``).

* Output is appended and flushed record by record, so a killed run resumes: ids already in the
  output are skipped (a torn last line from the kill is dropped first).
* Every input row gives exactly one output record: an empty report becomes an all-null record
  with the reason "empty report"; a teacher that never gives a valid answer leaves an
  unanswerable record with the reason - nothing is dropped, nothing invented.
* Answers are cached (SQLite, model + prompt + schema), so a re-run is served from the cache.
* With a second teacher its records go to ``<output>.second.jsonl`` and the summary reports
  per-finding Cohen's kappa between the two.
* ``<output>.meta.json`` records the teachers, whether a remote endpoint was allowed, and the
  summary.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

from medvlp.errors import DataError
from medvlp.knowledge.labeler import LABELER_VERSION, label_report
from medvlp.knowledge.teachers import (AnswerCache, FakeTeacher, HFLocalTeacher,
                                       OpenAICompatTeacher, Teacher, TeacherStats, cache_key,
                                       structure_with_teacher)
from medvlp.knowledge.ums import (CXR_FINDINGS, SCHEMA_VERSION, UMSRecord, canonical_json,
                                  parse_record)

RULES = "rules"


def make_teacher(spec: str | Teacher, *, allow_remote: bool = False) -> Teacher | None:
    """``"rules"`` -> None (the offline labeler); ``"openai:URL[#MODEL]"``; ``"hf:NAME_OR_PATH"``;
    ``"fake"``; or a Teacher object, returned as is."""
    if not isinstance(spec, str):
        return spec
    if spec == RULES:
        return None
    if spec == "fake":
        return FakeTeacher()
    kind, _, rest = spec.partition(":")
    if kind == "openai" and rest:
        url, _, model = rest.partition("#")
        return OpenAICompatTeacher(url, model or None, allow_remote=allow_remote)
    if kind == "hf" and rest:
        return HFLocalTeacher(rest)
    raise DataError(None, f"teacher {spec!r}", "'rules', 'openai:URL[#MODEL]', 'hf:NAME_OR_PATH' or 'fake'")


def read_reports(path: str | Path, text_columns: Sequence[str], id_column: str) -> pd.DataFrame:
    """Read a CSV or JSONL of reports; check the id and text columns exist and ids are unique."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "input file not found", "a CSV or JSONL of reports")
    try:
        if p.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            df = pd.read_json(p, lines=True, dtype=False)
        else:
            df = pd.read_csv(p, dtype={id_column: str}, keep_default_na=True)
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(p, f"cannot parse ({e})", "CSV with a header row, or JSON lines") from e
    missing = [c for c in [id_column, *text_columns] if c not in df.columns]
    if missing:
        raise DataError(p, f"columns {missing} missing (has {list(df.columns)})",
                        f"an id column {id_column!r} and text columns {list(text_columns)}")
    df[id_column] = df[id_column].astype(str)
    dup = df[id_column].duplicated()
    if dup.any():
        raise DataError(p, f"id {df[id_column][dup].iloc[0]!r} appears more than once",
                        f"unique values in {id_column!r}")
    return df


def _report_text(row: dict[str, Any], text_columns: Sequence[str]) -> str:
    parts = []
    for col in text_columns:
        value = row.get(col)
        if value is None or (isinstance(value, float) and value != value) or not str(value).strip():
            continue
        head = f"{col.upper()}: " if col.lower() in ("findings", "impression") else ""
        parts.append(head + " ".join(str(value).split()))
    return "\n".join(parts)


def _done_ids(path: Path) -> set[str]:
    """Ids already written; a torn last line (killed mid-write) is cut off the file."""
    if not path.exists():
        return set()
    ids: set[str] = set()
    good_bytes = 0
    with path.open("rb") as fh:
        for line in fh:
            try:
                ids.add(str(json.loads(line)["provenance"]["record_id"]))
                good_bytes += len(line)
            except (ValueError, KeyError, TypeError):
                break
    if good_bytes < path.stat().st_size:
        with path.open("r+b") as fh:
            fh.truncate(good_bytes)
    return ids


def _rules_record(text: str, record_id: str, cache: AnswerCache | None,
                  input_path: str) -> UMSRecord:
    key = cache_key(f"rules:{LABELER_VERSION}", text, SCHEMA_VERSION)
    hit = cache.get(key) if cache is not None else None
    if hit is not None:
        record = UMSRecord.model_validate_json(hit)
        record.provenance.cached = True
    else:
        record = label_report(text=text)
        if cache is not None:
            cache.put(key, f"rules:{LABELER_VERSION}", canonical_json(record))
        record.provenance.cached = False
    record.provenance.record_id = record_id
    record.provenance.input = input_path
    return record


def _label_all(rows: list[dict[str, Any]], teacher: Teacher | None, *, text_columns: Sequence[str],
               id_column: str, cache: AnswerCache | None, input_path: str, max_attempts: int,
               stats: TeacherStats) -> Iterator[UMSRecord]:
    if teacher is None:
        for row in rows:
            yield _rules_record(_report_text(row, text_columns), row[id_column], cache, input_path)
        return

    def one(row: dict[str, Any]) -> UMSRecord:
        rec = structure_with_teacher(teacher, _report_text(row, text_columns), CXR_FINDINGS,
                                     record_id=row[id_column], cache=cache,
                                     max_attempts=max_attempts, stats=stats)
        rec.provenance.input = input_path
        return rec

    workers = max(1, int(getattr(teacher, "concurrency", 1)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # A bounded window keeps memory flat and lets results stream to disk in input order.
        window = workers * 4
        futures = [pool.submit(one, r) for r in rows[:window]]
        nxt = window
        while futures:
            rec = futures.pop(0).result()
            if nxt < len(rows):
                futures.append(pool.submit(one, rows[nxt]))
                nxt += 1
            yield rec


def _write_pass(rows: list[dict[str, Any]], teacher: Teacher | None, out: Path, *,
                text_columns: Sequence[str], id_column: str, cache: AnswerCache | None,
                input_path: str, max_attempts: int, progress: bool, label: str) -> dict[str, Any]:
    done = _done_ids(out)
    todo = [r for r in rows if r[id_column] not in done]
    stats = TeacherStats()
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    records = _label_all(todo, teacher, text_columns=text_columns, id_column=id_column,
                         cache=cache, input_path=input_path, max_attempts=max_attempts, stats=stats)
    with out.open("a", encoding="utf-8") as fh:
        if progress:
            from rich.progress import Progress

            with Progress(transient=False) as bar:
                task = bar.add_task(label, total=len(todo))
                for i, rec in enumerate(records, 1):
                    fh.write(canonical_json(rec) + "\n")
                    fh.flush()
                    if i % 64 == 0 or i == len(todo):  # redrawing per record costs more than labeling
                        bar.update(task, completed=i)
        else:
            for rec in records:
                fh.write(canonical_json(rec) + "\n")
                fh.flush()
    seconds = time.perf_counter() - t0
    return {"written": len(todo), "skipped_existing": len(rows) - len(todo),
            "seconds": round(seconds, 4),
            "reports_per_s": round(len(todo) / seconds, 1) if seconds > 0 and todo else None,
            "teacher_calls": stats.calls, "invalid_answers": stats.invalid,
            "transport_errors": stats.transport_errors}


def read_ums_jsonl(path: str | Path) -> list[UMSRecord]:
    """Read and verify every line of a UMS JSONL file (errors name file and line)."""
    p = Path(path)
    out = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            out.append(parse_record(line, path=f"{p}:{i}"))
    return out


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float | None:
    """Cohen's kappa between two raters over the same items (None is a category of its own):

        kappa = (p_o - p_e) / (1 - p_e),  p_o = mean(a_i == b_i),  p_e = sum_c p_a(c) * p_b(c)

    Returns 1.0 when both raters are constant and identical, None when undefined (no items,
    or p_e = 1 with disagreement, which cannot happen) .
    """
    n = len(a)
    if n == 0 or n != len(b):
        return None
    cats = set(a) | set(b)
    po = sum(x == y for x, y in zip(a, b)) / n
    pe = sum((list(a).count(c) / n) * (list(b).count(c) / n) for c in cats)
    if pe >= 1.0:
        return 1.0 if po == 1.0 else None
    return (po - pe) / (1.0 - pe)


def summarize(records: list[UMSRecord], findings: Sequence[str] = CXR_FINDINGS) -> dict[str, Any]:
    """Per-finding counts, prevalence (present / records) and null rate, plus failures."""
    n = len(records)
    per: dict[str, Any] = {}
    for f in findings:
        states = [r.findings[f].state if f in r.findings else None for r in records]
        counts = {s: states.count(s) for s in ("present", "absent", "uncertain")}
        counts["null"] = states.count(None)
        per[f] = {**counts, "prevalence": round(counts["present"] / n, 4) if n else None,
                  "null_rate": round(counts["null"] / n, 4) if n else None}
    reasons = [r.verifier.reason for r in records if not r.verifier.passed]
    return {"records": n, "per_finding": per,
            "empty_reports": sum(x == "empty report" for x in reasons),
            "failures": sum(x != "empty report" for x in reasons),
            "failure_examples": [x for x in reasons if x != "empty report"][:5]}


def agreement(first: list[UMSRecord], second: list[UMSRecord],
              findings: Sequence[str] = CXR_FINDINGS) -> dict[str, float | None]:
    """Per-finding Cohen's kappa between two teachers, on the records both produced."""
    other = {r.provenance.record_id: r for r in second}
    pairs = [(r, other[r.provenance.record_id]) for r in first if r.provenance.record_id in other]
    out: dict[str, float | None] = {}
    for f in findings:
        k = cohen_kappa([a.findings[f].state for a, _ in pairs], [b.findings[f].state for _, b in pairs])
        out[f] = None if k is None else round(k, 4)
    return out


def print_summary(summary: dict[str, Any]) -> None:
    """A rich table: per finding present/absent/uncertain/null, prevalence, null rate, kappa."""
    from rich.console import Console
    from rich.table import Table

    kappa = summary.get("agreement") or {}
    table = Table(title=f"UMS structuring: {summary['records']} records, teacher {summary['teacher']}")
    for col in ("finding", "present", "absent", "uncertain", "null", "prevalence", "null rate"):
        table.add_column(col, justify="left" if col == "finding" else "right")
    if kappa:
        table.add_column("kappa", justify="right")
    for f, row in summary["per_finding"].items():
        cells = [f, *(str(row[k]) for k in ("present", "absent", "uncertain", "null")),
                 f"{row['prevalence']:.3f}", f"{row['null_rate']:.3f}"]
        if kappa:
            cells.append("n/a" if kappa.get(f) is None else f"{kappa[f]:.3f}")
        table.add_row(*cells)
    console = Console()
    console.print(table)
    console.print(f"failures: {summary['failures']}  empty reports: {summary['empty_reports']}  "
                  f"cache hits: {summary['cache_hits']}  misses: {summary['cache_misses']}  "
                  f"written: {summary['written']}  skipped (already done): "
                  f"{summary['skipped_existing']}  {summary['seconds']} s")


def run_structure(input_path: str | Path, output_path: str | Path, teacher: str | Teacher = RULES,
                  second_teacher: str | Teacher | None = None,
                  text_columns: Sequence[str] = ("findings", "impression"), id_column: str = "uid",
                  cache_path: str | Path | None = None, allow_remote: bool = False,
                  limit: int | None = None, progress: bool = True, overwrite: bool = False,
                  max_attempts: int = 3) -> dict[str, Any]:
    """Structure every report of ``input_path`` into UMS JSONL at ``output_path``.

    ``teacher``: ``"rules"`` (offline labeler), ``"openai:URL[#MODEL]"``, ``"hf:NAME_OR_PATH"``,
    ``"fake"`` or a Teacher object. ``cache_path`` defaults to ``<output>.cache.sqlite``.
    ``overwrite`` starts the output afresh (the cache is kept, so this is the cheap re-run).
    Returns the summary dict (also written to ``<output>.meta.json``).
    """
    inp, out = Path(input_path), Path(output_path)
    df = read_reports(inp, text_columns, id_column)
    if limit is not None:
        df = df.head(limit)
    rows = df.to_dict("records")
    first = make_teacher(teacher, allow_remote=allow_remote)
    second = make_teacher(second_teacher, allow_remote=allow_remote) if second_teacher else None
    second_out = out.with_name(out.name + ".second.jsonl") if second_teacher else None
    if overwrite:
        for p in (out, second_out):
            if p is not None and p.exists():
                p.unlink()
    cache = AnswerCache(cache_path or out.with_name(out.name + ".cache.sqlite"))
    common = dict(text_columns=text_columns, id_column=id_column, cache=cache,
                  input_path=str(inp), max_attempts=max_attempts, progress=progress)
    try:
        run = _write_pass(rows, first, out, label="structuring", **common)
        run2 = (_write_pass(rows, second, second_out, label="second teacher", **common)
                if second_out is not None else None)
    finally:
        hits, misses = cache.hits, cache.misses
        cache.close()
    wanted = set(df[id_column])
    records = [r for r in read_ums_jsonl(out) if r.provenance.record_id in wanted]
    summary: dict[str, Any] = {
        "teacher": _name(teacher, first), "second_teacher": _name(second_teacher, second) if second_teacher else None,
        "input": str(inp), "output": str(out), **summarize(records), **run,
        "cache_hits": hits, "cache_misses": misses, "cache_path": str(cache.path),
        "allow_remote": allow_remote,
        "remote_endpoint": bool(getattr(first, "remote", False) or getattr(second, "remote", False)),
    }
    if second_out is not None:
        seconds = [r for r in read_ums_jsonl(second_out) if r.provenance.record_id in wanted]
        summary["agreement"] = agreement(records, seconds)
        summary["second_run"] = run2
    meta = out.with_name(out.name + ".meta.json")
    meta.write_text(json.dumps(summary, indent=2, default=str))
    if progress:
        print_summary(summary)
    return summary


def _name(spec: Any, teacher: Teacher | None) -> str:
    if teacher is None:
        return f"rules:{LABELER_VERSION} (offline)"
    return str(getattr(teacher, "name", spec))


def benchmark_structuring(input_path: str | Path | None = None, workdir: str | Path | None = None,
                          limit: int | None = None) -> dict[str, Any]:
    """Rules-labeler throughput on the IU X-ray reports and the speed-up of a cached re-run.

    Two runs into a temporary folder: a cold one (empty cache) and an ``overwrite`` re-run that
    is served from the cache.
    """
    import tempfile

    from medvlp.data.root import find_file
    from medvlp.utils import machine_info

    src = Path(input_path) if input_path else find_file("iu_xray/indiana_reports.csv")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        out = Path(tmp) / "ums.jsonl"
        cold = run_structure(src, out, limit=limit, progress=False)
        warm = run_structure(src, out, limit=limit, progress=False, overwrite=True)
    return {
        "benchmark": "structuring_rules", "input": str(src), "reports": cold["written"],
        "cold_seconds": cold["seconds"], "cold_reports_per_s": cold["reports_per_s"],
        "cached_seconds": warm["seconds"], "cached_reports_per_s": warm["reports_per_s"],
        "cache_hits": warm["cache_hits"],
        "cached_speedup": round(cold["seconds"] / warm["seconds"], 2) if warm["seconds"] else None,
        "machine": machine_info(),
    }
