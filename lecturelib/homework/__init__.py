"""Homework from this book: a student release, a self-check and an autograder.

    python -m lecturelib.homework release OUT_DIR
    python -m lecturelib.homework check [CHAPTER]
    python -m lecturelib.homework grade SUBMISSIONS_DIR --out grades.csv

Which functions are exercises, their points, hints and tests: ``lecturelib/homework/exercises.py``.
Hidden tests: ``homework/hidden_tests/test_<chapter>_hidden.py`` at the repository root (never
released). The instructors' page ``instructors.md`` describes the workflow.
"""

from .exercises import EXERCISES, Exercise  # noqa: F401
from .release import ReleaseError, release, stub_source  # noqa: F401
from .check import check  # noqa: F401
from .grade import GradeSettings, grade  # noqa: F401
