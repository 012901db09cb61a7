"""``check [CHAPTER]``: a student's self-check, per exercise, without pytest tracebacks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .exercises import EXERCISES, Exercise, chapters, public_test_file, select
from .runner import run_tests
from .scoring import ExerciseResult, render, score


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The book copy to check: the nearest folder (from ``start``, default the working directory,
    upwards) holding ``lecturelib/`` and ``tests/``, else the one this package was imported from."""
    here = Path(start or Path.cwd()).resolve()
    for p in [here, *here.parents]:
        if (p / "lecturelib" / "__init__.py").is_file() and (p / "tests").is_dir():
            return p
    return Path(__file__).resolve().parents[2]


def check(
    chapter: str | None = None,
    root: str | os.PathLike | None = None,
    exercises: Sequence[Exercise] = EXERCISES,
    test_timeout: float = 120.0,
    total_timeout: float = 1800.0,
) -> tuple[list[ExerciseResult], str]:
    """Run the public tests that score the exercises of ``chapter`` (or of all chapters); return
    the results per exercise and the text report."""
    root = Path(root) if root is not None else find_root()
    chosen = select(exercises, chapter)
    files = [public_test_file(ch) for ch in chapters(chosen)]
    missing = [f for f in files if not (root / f).is_file()]
    patterns = sorted({p for e in chosen for p in e.test_patterns})  # only the tests that score
    report = run_tests(root, files, patterns, test_timeout=test_timeout, total_timeout=total_timeout,
                       max_output=50_000_000, max_file_bytes=2**40)
    results = score(chosen, report)
    text = render(results, show_points=True)
    if missing:
        text += f"missing test files: {', '.join(missing)}\n"
    if report.problems:
        text += "problems while running the tests: " + "; ".join(report.problems) + "\n"
    return results, text
