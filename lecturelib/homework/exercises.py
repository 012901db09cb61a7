"""The one place that says which functions are homework exercises.

An exercise is a function (or method) named by its dotted path, e.g.
``lecturelib.optim.sgd_update`` or ``lecturelib.module.Class.method``. ``release`` keeps its
signature and docstring and replaces its body with ``raise NotImplementedError(<hint>)``; ``check``
and ``grade`` score it by the tests whose function names match ``tests`` (fnmatch patterns, without
the ``[parameters]`` suffix) in ``tests/test_<chapter>.py`` (public, shipped to students) and
``homework/hidden_tests/test_<chapter>_hidden.py`` (kept by the instructor).

A name that does not exist makes ``release`` fail with an error naming it, so this list only holds
functions that exist; the tests check that every exercise has public tests and that they all fail
on the untouched release.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Exercise:
    """One function students implement.

    ``name``: dotted path ``lecturelib.<chapter>.<function>`` or ``lecturelib.<chapter>.<Class>.<method>``.
    ``points``: what it is worth. ``hint``: shown in the ``NotImplementedError`` and by ``check``.
    ``tests``: fnmatch patterns on test function names; default ``("test_<function>*",)``.
    """

    name: str
    points: float
    hint: str
    tests: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parts = self.name.split(".")
        if len(parts) < 3 or parts[0] != "lecturelib" or not all(p.isidentifier() for p in parts):
            raise ValueError(
                f"exercise name must look like 'lecturelib.<module>.<function>', got {self.name!r}"
            )
        if not self.points > 0:
            raise ValueError(f"exercise {self.name}: points must be > 0, got {self.points!r}")
        if not self.hint.strip():
            raise ValueError(f"exercise {self.name}: a hint is required")
        if isinstance(self.tests, str):
            raise TypeError(f"exercise {self.name}: tests must be a tuple of patterns, not a string")

    @property
    def module(self) -> str:
        """``lecturelib.optim``"""
        return ".".join(self.name.split(".")[:2])

    @property
    def chapter(self) -> str:
        """``optim``: the module's short name, also the test file's ``tests/test_<chapter>.py``."""
        return self.name.split(".")[1]

    @property
    def qualname(self) -> str:
        """``sgd_update`` or ``Class.method``"""
        return ".".join(self.name.split(".")[2:])

    @property
    def function(self) -> str:
        return self.name.split(".")[-1]

    @property
    def path(self) -> str:
        """Source file relative to the repository root, ``lecturelib/optim.py``."""
        return f"lecturelib/{self.chapter}.py"

    @property
    def test_patterns(self) -> tuple[str, ...]:
        return self.tests or (f"test_{self.function}*",)

    def covers(self, test_name: str) -> bool:
        """Whether the test function ``test_name`` (``[params]`` allowed) scores this exercise."""
        base = test_name.split("[", 1)[0]
        return any(fnmatch.fnmatchcase(base, p) for p in self.test_patterns)


def public_test_file(chapter: str) -> str:
    return f"tests/test_{chapter}.py"


def hidden_test_file(chapter: str) -> str:
    return f"test_{chapter}_hidden.py"


def chapters(exercises: Sequence[Exercise]) -> list[str]:
    """Chapters in declaration order, each once."""
    return list(dict.fromkeys(e.chapter for e in exercises))


def select(exercises: Sequence[Exercise], chapter: str | None) -> list[Exercise]:
    """The exercises of one chapter (``optim``, ``02_optim``, ``test_optim``) or all of them."""
    if chapter is None or chapter in ("all", ""):
        return list(exercises)
    key = chapter.strip().removesuffix(".py").removesuffix(".ipynb").rsplit("/", 1)[-1]
    key = key.removeprefix("test_").lstrip("0123456789").lstrip("_")
    chosen = [e for e in exercises if e.chapter == key or e.name == chapter or e.function == chapter]
    if not chosen:
        raise ValueError(
            f"no exercises in chapter {chapter!r}; chapters with exercises: {', '.join(chapters(exercises))}"
        )
    return chosen


def validate(exercises: Sequence[Exercise]) -> None:
    names = [e.name for e in exercises]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"exercises declared twice: {', '.join(dup)}")


EXERCISES: tuple[Exercise, ...] = ()

validate(EXERCISES)
