"""``grade SUBMISSIONS_DIR --out grades.csv``: score every submission, one process each.

Each entry of ``SUBMISSIONS_DIR`` (a folder or a ``.zip`` of the student copy; its name is the
student id) is graded in a fresh temporary workspace built from the instructor's tree: the
instructor's ``lecturelib`` with only the exercise modules (``lecturelib/<chapter>.py``) taken from
the submission, the instructor's public tests and the hidden tests. So editing tests, helpers or
``gradcheck`` in a copy changes nothing, and whatever a submission deletes or writes stays in its
workspace. The CSV (one row per student and exercise) and the feedback files are written as each
submission finishes, so an interrupted run keeps what it graded.
"""

from __future__ import annotations

import csv
import os
import shutil
import stat
import tempfile
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .exercises import EXERCISES, Exercise, chapters, hidden_test_file, public_test_file
from .release import repo_root
from .runner import collect, run_tests
from .scoring import ExerciseResult, explain, render, score

FIELDS = ["student", "exercise", "points", "max_points", "status", "tests_passed", "tests_total", "detail"]
MAX_UNPACKED = 500 * 2**20
MAX_MODULE = 2 * 2**20


class SubmissionError(Exception):
    """A submission that cannot be graded at all (bad archive, no lecturelib/ folder)."""


@dataclass
class GradeSettings:
    test_timeout: float = 60.0
    total_timeout: float = 600.0
    max_output: int = 1_000_000
    max_file_bytes: int = 64 * 2**20


def default_hidden_dir(root: Path) -> Path:
    return root / "homework" / "hidden_tests"


def build_base(reference: Path, hidden: Path | None, dest: Path) -> None:
    """The instructor's tree the submissions are graded in: lecturelib, tests, hidden tests."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.ipynb")
    shutil.copytree(reference / "lecturelib", dest / "lecturelib", ignore=ignore)
    shutil.copytree(reference / "tests", dest / "tests", ignore=ignore)
    for name in ("pyproject.toml", "conftest.py"):
        if (reference / name).is_file():
            shutil.copy2(reference / name, dest / name)
    if hidden is not None and hidden.is_dir():
        shutil.copytree(hidden, dest / "tests_hidden", ignore=ignore)


def unpack(entry: Path, dest: Path) -> Path:
    """Copy a submission folder or safely extract a zip into ``dest``; return the copy's root
    (the folder holding ``lecturelib/``)."""
    if entry.is_dir():
        shutil.copytree(entry, dest, symlinks=True, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__"))
    elif entry.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(entry) as zf:
                infos = zf.infolist()
                if sum(i.file_size for i in infos) > MAX_UNPACKED:
                    raise SubmissionError(f"archive unpacks to more than {MAX_UNPACKED // 2**20} MB")
                dest.mkdir(parents=True)
                for info in infos:
                    name = info.filename
                    parts = Path(name).parts
                    if name.startswith(("/", "\\")) or ".." in parts or ":" in name:
                        raise SubmissionError(f"archive entry with an unsafe path: {name!r}")
                    if stat.S_ISLNK(info.external_attr >> 16) or info.is_dir():
                        continue
                    target = dest / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, ValueError) as exc:
            raise SubmissionError(f"not a valid zip archive ({type(exc).__name__}: {exc})") from None
    else:
        raise SubmissionError(f"{entry.name} is neither a folder nor a .zip archive")
    candidates = [dest, *sorted(p for p in dest.glob("*") if p.is_dir()),
                  *sorted(p for p in dest.glob("*/*") if p.is_dir())]
    for c in candidates:
        if (c / "lecturelib").is_dir() and not (c / "lecturelib").is_symlink():
            return c
    raise SubmissionError("no lecturelib/ folder found in the submission")


def grade_one(entry: Path, base: Path, exercises: Sequence[Exercise], expected: Sequence[str],
              settings: GradeSettings) -> tuple[list[ExerciseResult], str]:
    """Grade one submission; return per-exercise results and the feedback text."""
    with tempfile.TemporaryDirectory(prefix="hw-grade-", ignore_cleanup_errors=True) as tmp:
        tmp = Path(tmp)
        sub_root = unpack(entry, tmp / "submission")
        ws = tmp / "workspace"
        shutil.copytree(base, ws, symlinks=True)
        notes = []
        for ch in chapters(exercises):
            src = sub_root / "lecturelib" / f"{ch}.py"
            dst = ws / "lecturelib" / f"{ch}.py"
            if src.is_symlink() or not src.is_file():
                notes.append(f"lecturelib/{ch}.py is missing from the submission: its exercises score 0")
                dst.write_text(f'raise ImportError("lecturelib/{ch}.py is missing from the submission")\n')
            elif src.stat().st_size > MAX_MODULE:
                notes.append(f"lecturelib/{ch}.py is larger than {MAX_MODULE // 2**20} MB: not graded")
                dst.write_text(f'raise ImportError("lecturelib/{ch}.py is too large")\n')
            else:
                shutil.copyfile(src, dst)
        files = [f for ch in chapters(exercises) for f in
                 (public_test_file(ch), f"tests_hidden/{hidden_test_file(ch)}")]
        select = sorted({p for e in exercises for p in e.test_patterns})
        report = run_tests(ws, files, select, test_timeout=settings.test_timeout,
                           total_timeout=settings.total_timeout, max_output=settings.max_output,
                           max_file_bytes=settings.max_file_bytes, env=_child_env(tmp))
        if report.lecturelib and not Path(report.lecturelib).resolve().is_relative_to(ws.resolve()):
            raise RuntimeError(f"the tests imported lecturelib from {report.lecturelib}, not the workspace")
        results = score(exercises, report, expected)
        text = render(results, show_points=True)
        if notes:
            text += "\n" + "\n".join(notes) + "\n"
        if report.problems:
            text += "\nproblems while running the tests: " + "; ".join(report.problems) + "\n"
        return results, text


def _child_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LECTURELIB_", "PYTEST"))}
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), TMPDIR=str(tmp), OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    env.pop("PYTHONPATH", None)
    return env


def _rows(student: str, results: Sequence[ExerciseResult]) -> list[dict]:
    rows = []
    for r in results:
        detail = r.note.splitlines()[0] if r.note else ""
        if not detail and r.failures:
            detail = " ".join(explain(r.failures[0]).split())[:300]
        rows.append({"student": student, "exercise": r.exercise.name, "points": f"{r.points:g}",
                     "max_points": f"{r.exercise.points:g}", "status": r.status,
                     "tests_passed": r.passed, "tests_total": r.total, "detail": detail})
    return rows


def _error_rows(student: str, exercises: Sequence[Exercise], why: str) -> list[dict]:
    return [{"student": student, "exercise": e.name, "points": "0", "max_points": f"{e.points:g}",
             "status": "error", "tests_passed": 0, "tests_total": 0, "detail": why} for e in exercises]


def grade(
    submissions: str | os.PathLike,
    out: str | os.PathLike = "grades.csv",
    *,
    reference: str | os.PathLike | None = None,
    hidden: str | os.PathLike | None = None,
    feedback_dir: str | os.PathLike | None = None,
    exercises: Sequence[Exercise] = EXERCISES,
    settings: GradeSettings | None = None,
    jobs: int = 1,
    log=print,
) -> dict[str, float]:
    """Grade every entry of ``submissions``; write ``out`` (CSV), ``<out>_totals.csv`` and one
    feedback file per student; return the total points per student."""
    settings = settings or GradeSettings()
    reference = Path(reference or repo_root()).resolve()
    hidden_dir = Path(hidden).resolve() if hidden else default_hidden_dir(reference)
    subs_dir = Path(submissions).resolve()
    if not subs_dir.is_dir():
        raise FileNotFoundError(f"submissions folder {subs_dir} does not exist")
    out = Path(out).resolve()
    feedback = Path(feedback_dir).resolve() if feedback_dir else out.parent / (out.stem + "_feedback")
    feedback.mkdir(parents=True, exist_ok=True)
    entries = sorted(p for p in subs_dir.iterdir() if not p.name.startswith((".", "__")))
    if not exercises:
        raise ValueError("no exercises declared")

    totals: dict[str, float] = {}
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="hw-base-") as tmp:
        base = Path(tmp) / "base"
        build_base(reference, hidden_dir, base)
        files = [f for ch in chapters(exercises) for f in
                 (public_test_file(ch), f"tests_hidden/{hidden_test_file(ch)}")]
        ref = collect(base, files, sorted({p for e in exercises for p in e.test_patterns}))
        if ref.collect_errors or ref.problems:
            raise RuntimeError(f"the reference tests do not collect: {ref.collect_errors or ref.problems}")
        expected = ref.collected
        for e in exercises:
            if score([e], ref, expected)[0].total == 0:
                raise RuntimeError(f"exercise {e.name} has no tests in {files}")

        with open(out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            fh.flush()

            def work(entry: Path) -> None:
                student = entry.name[:-4] if entry.name.lower().endswith(".zip") else entry.name
                try:
                    results, text = grade_one(entry, base, exercises, expected, settings)
                    rows = _rows(student, results)
                    total = sum(r.points for r in results)
                except SubmissionError as exc:
                    rows, total, text = _error_rows(student, exercises, str(exc)), 0.0, f"not graded: {exc}\n"
                except Exception as exc:  # the grader must go on with the others
                    why = f"grader error: {type(exc).__name__}: {exc}"
                    rows, total, text = _error_rows(student, exercises, why), 0.0, why + "\n"
                full = sum(e.points for e in exercises)
                with lock:
                    writer.writerows(rows)
                    fh.flush()
                    (feedback / f"{_safe(student)}.txt").write_text(
                        f"Feedback for {student}: {total:g}/{full:g} points\n\n{text}")
                    totals[student] = total
                    log(f"{student}: {total:g}/{full:g}")

            if jobs > 1:
                with ThreadPoolExecutor(jobs) as pool:
                    list(pool.map(work, entries))
            else:
                for entry in entries:
                    work(entry)

    with open(out.with_name(out.stem + "_totals.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["student", "points", "max_points"])
        for student in sorted(totals):
            w.writerow([student, f"{totals[student]:g}", f"{sum(e.points for e in exercises):g}"])
    return totals


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "student"
