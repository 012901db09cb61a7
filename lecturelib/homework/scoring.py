"""From per-test results to per-exercise verdicts, points and readable feedback."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .exercises import Exercise, hidden_test_file, public_test_file
from .runner import RunReport, TestResult


@dataclass
class ExerciseResult:
    exercise: Exercise
    status: str  # pass | partial | fail | todo | blocked | error | no tests
    passed: int
    total: int
    points: float
    failures: list[TestResult] = field(default_factory=list)
    note: str = ""


def _files_of(ex: Exercise) -> tuple[str, str]:
    return public_test_file(ex.chapter), f"tests_hidden/{hidden_test_file(ex.chapter)}"


def _belongs(ex: Exercise, nodeid: str) -> bool:
    file, name = nodeid.split("::", 1)[0], nodeid.rsplit("::", 1)[-1]
    return file in _files_of(ex) and ex.covers(name)


def score(exercises: Sequence[Exercise], report: RunReport, expected: Sequence[str] | None = None) -> list[ExerciseResult]:
    """Score each exercise: the fraction of its (non-skipped) tests that pass, times its points.

    ``expected``: node ids that should have run (the reference collection); a test in it without a
    result counts as failed ("not run"). Without it, the tests collected in the run are used.
    """
    by_id = {r.nodeid: r for r in report.results}
    ids = list(expected) if expected is not None else list(dict.fromkeys([*report.collected, *by_id]))
    out = []
    for ex in exercises:
        mine = [i for i in ids if _belongs(ex, i)]
        broken = [f"{f} could not be imported:\n{m}" for f, m in report.collect_errors.items() if f in _files_of(ex)]
        results = []
        for i in mine:
            r = by_id.get(i)
            if r is None:
                why = "; ".join(broken or report.problems) or "the test did not run"
                file, name = i.split("::", 1)[0], i.rsplit("::", 1)[-1]
                r = TestResult(i, file, name, "failed", "notrun", why)
            results.append(r)
        counted = [r for r in results if r.outcome != "skipped"]
        passed = sum(r.outcome == "passed" for r in counted)
        failures = [r for r in counted if r.outcome != "passed"]
        total = len(counted)
        note = ""
        if total == 0:
            status, note = ("error", broken[0]) if broken else ("no tests", "no tests found for this exercise")
        elif passed == total:
            status = "pass"
        elif any(r.kind == "todo" and f"Exercise {ex.name} " in r.message for r in failures):
            status = "todo"
        elif all(r.kind == "todo" for r in failures):
            others = sorted({_todo_name(r.message) for r in failures} - {ex.name})
            status, note = "blocked", f"its tests first call {', '.join(others)}: implement that first"
        elif broken and passed == 0:
            status, note = "error", broken[0]
        else:
            status = "fail" if passed == 0 else "partial"
        pts = round(ex.points * passed / total, 2) if total else 0.0
        out.append(ExerciseResult(ex, status, passed, total, pts, failures, note))
    return out


def _todo_name(message: str) -> str:
    """``lecturelib.x.f`` from a stub's ``Exercise lecturelib.x.f (2 points): ...`` message."""
    parts = message.split()
    return parts[1] if len(parts) > 1 else "?"


LABEL = {"blocked": "WAIT", "pass": "PASS", "partial": "PART", "fail": "FAIL", "todo": "TODO", "error": "ERR ", "no tests": "????"}


def _indent(text: str, pad: str) -> str:
    return "\n".join(pad + ln for ln in text.splitlines())


def explain(r: TestResult) -> str:
    """A failing test in a few lines: what was checked, where the student's code stopped, why."""
    if r.kind == "todo":
        return f"{r.name}: {_todo_name(r.message)} is not implemented yet"
    if r.kind == "notrun":
        return f"{r.name}: not run: {r.message}"
    head = {"timeout": "too slow", "crash": "crashed", "output": "too much output"}.get(r.kind, "failed")
    lines = [f"{r.name}: {head}"]
    if r.test_line:
        lines.append(f"  checked: {r.test_line}")
    if r.where:
        lines.append(f"  your code: {r.where}")
    if r.message:
        lines.append(_indent(r.message, "  | "))
    return "\n".join(lines)


def render(results: Sequence[ExerciseResult], show_points: bool = True, max_failures: int = 3) -> str:
    """The per-exercise report printed by ``check`` and written as feedback by ``grade``."""
    lines = []
    chapter = None
    width = max((len(r.exercise.qualname) for r in results), default=10)
    for res in results:
        ex = res.exercise
        if ex.chapter != chapter:
            chapter = ex.chapter
            lines.append(f"\n== {chapter} ({public_test_file(chapter)}) ==")
        pts = f"  {res.points:g}/{ex.points:g} pts" if show_points else ""
        lines.append(f"{LABEL[res.status]}  {ex.qualname:<{width}}  {res.passed}/{res.total} tests{pts}")
        if res.status == "todo":
            lines.append(f"      hint: {ex.hint.strip()}")
        elif res.note:
            lines.append(_indent(res.note, "      "))
        if res.status in ("fail", "partial", "error") or (res.status == "todo" and res.passed):
            shown = [f for f in res.failures if f.kind != "todo"] or res.failures
            picked = _distinct(shown)[:max_failures]
            for f in picked:
                lines.append(_indent(explain(f), "      "))
            more = len(res.failures) - len(picked)
            if more > 0:
                lines.append(f"      ... and {more} more failing test(s)")
    total = sum(r.points for r in results)
    full = sum(r.exercise.points for r in results)
    n_pass = sum(r.status == "pass" for r in results)
    lines.append(f"\n{n_pass}/{len(results)} exercises pass" + (f", {total:g}/{full:g} points" if show_points else ""))
    return "\n".join(lines).lstrip("\n") + "\n"


def _distinct(failures: Sequence[TestResult]) -> list[TestResult]:
    """One failing test per distinct message: parametrized variants often fail the same way."""
    seen, out = set(), []
    for f in failures:
        key = (f.kind, f.message.splitlines()[0] if f.message else "", f.where)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
