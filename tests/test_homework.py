"""Homework machinery: release stubs exercises by AST, check reports per exercise, grade survives
hostile submissions; the real declaration releases, every exercise has tests, the reference scores
full marks and the untouched release zero (on a small subset, to stay fast)."""

from __future__ import annotations

import ast
import csv
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from lecturelib.homework import exercises as hw_exercises
from lecturelib.homework.exercises import EXERCISES, Exercise, chapters, public_test_file, select
from lecturelib.homework.grade import GradeSettings, grade
from lecturelib.homework.release import ReleaseError, release, repo_root, stub_source
from lecturelib.homework.runner import collect

ROOT = repo_root()

# ---------------------------------------------------------------------------------------------
# A toy book: no torch, so every subprocess starts in well under a second.

TOY_MODULE = '''\
"""A toy chapter."""

import numpy as np


def square(x: np.ndarray) -> np.ndarray:
    """Elementwise square of ``x`` (any shape)."""
    # the answer: multiply
    return x * x
    # trailing comment with a secret


def norm(x: np.ndarray) -> float:
    """Euclidean norm of ``x``."""
    if x.ndim == 0:
        raise ValueError("norm needs an array, got a scalar")
    return float(np.sqrt((x * x).sum()))


class Counter:
    """Counts steps."""

    def __init__(self):
        self.n = 0

    @staticmethod
    def describe() -> str:
        return "counter"

    def step(self, k: int = 1) -> int:
        """Add ``k``; return the count."""
        self.n += k
        return self.n


def helper() -> int:
    return 1
'''

TOY_TESTS = '''\
import numpy as np
import pytest
from lecturelib.toy import Counter, norm, square


def test_square_matches_numpy():
    x = np.linspace(-2, 3, 7)
    np.testing.assert_allclose(square(x), np.square(x), rtol=1e-12)


@pytest.mark.parametrize("n", [1, 3])
def test_square_shapes(n):
    assert square(np.ones((n, 2))).shape == (n, 2)


def test_norm_value():
    got, expected = norm(np.array([3.0, 4.0])), 5.0
    assert abs(got - expected) / expected < 1e-12


def test_norm_rejects_scalars():
    with pytest.raises(ValueError, match="scalar"):
        norm(np.array(2.0))


def test_counter_steps():
    c = Counter()
    c.step()
    assert c.step(2) == 3


def test_unrelated_helper():
    from lecturelib.toy import helper
    assert helper() == 1
'''

TOY_HIDDEN = '''\
import numpy as np
from lecturelib.toy import norm, square


def test_square_hidden_negative_integers():
    assert (square(np.array([-3, 2])) == np.array([9, 4])).all()


def test_norm_hidden_matrix():
    assert abs(norm(np.ones((2, 2))) - 2.0) < 1e-12
'''

TOY_EXERCISES = (
    Exercise("lecturelib.toy.square", 2, "multiply x by itself"),
    Exercise("lecturelib.toy.norm", 1, "square, sum, square root; reject 0-d arrays"),
    Exercise("lecturelib.toy.Counter.step", 1, "increase self.n", tests=("test_counter*",)),
)

TOY_DECLARATION = '''

EXERCISES = (
    Exercise("lecturelib.toy.square", 2, "multiply x by itself"),
    Exercise("lecturelib.toy.norm", 1, "square, sum, square root; reject 0-d arrays"),
    Exercise("lecturelib.toy.Counter.step", 1, "increase self.n", tests=("test_counter*",)),
)
'''

FAST = GradeSettings(test_timeout=3, total_timeout=60, max_output=200_000, max_file_bytes=2**20)


def _toy_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("print(1)", execution_count=3)
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    code.metadata["execution"] = {"iopub.status.idle": "2026-01-01"}
    nb.cells = [nbformat.v4.new_markdown_cell("# 1. Toy"), code]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toybook")
    (root / "lecturelib").mkdir()
    (root / "lecturelib" / "__init__.py").write_text('"""toy lecturelib"""\n')
    shutil.copytree(ROOT / "lecturelib" / "homework", root / "lecturelib" / "homework",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(root / "lecturelib" / "homework" / "exercises.py", "a") as fh:
        fh.write(TOY_DECLARATION)
    (root / "lecturelib" / "toy.py").write_text(TOY_MODULE)
    (root / "tests").mkdir()
    (root / "tests" / "test_toy.py").write_text(TOY_TESTS)
    (root / "homework" / "hidden_tests").mkdir(parents=True)
    (root / "homework" / "hidden_tests" / "test_toy_hidden.py").write_text(TOY_HIDDEN)
    (root / "chapters").mkdir()
    _toy_notebook(root / "chapters" / "01_toy.ipynb")
    shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / ".ci").mkdir()
    (root / ".ci" / "secret.yml").write_text("instructor only\n")
    return root


@pytest.fixture(scope="module")
def toy_release(toy, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toyrelease") / "student"
    release(out, root=toy, exercises=TOY_EXERCISES)
    return out


def _def(tree: ast.Module, qualname: str):
    scope = tree.body
    for part in qualname.split("."):
        node = next(n for n in scope if getattr(n, "name", None) == part)
        scope = getattr(node, "body", [])
    return node


# --- release ---------------------------------------------------------------------------------

def test_stub_keeps_signature_docstring_and_replaces_body(toy_release):
    src = (toy_release / "lecturelib" / "toy.py").read_text()
    orig, stub = ast.parse(TOY_MODULE), ast.parse(src)
    for ex in TOY_EXERCISES:
        a, b = _def(orig, ex.qualname), _def(stub, ex.qualname)
        assert ast.dump(a.args) == ast.dump(b.args) and ast.get_docstring(a) == ast.get_docstring(b)
        assert [type(s) for s in b.body] == [ast.Expr, ast.Raise]
        assert f"Exercise {ex.name}" in ast.literal_eval(b.body[1].exc.args[0])
    assert "the answer" not in src and "secret" not in src and "x * x" not in src
    # what is not an exercise is untouched
    assert ast.dump(_def(orig, "helper")) == ast.dump(_def(stub, "helper"))
    assert ast.dump(_def(orig, "Counter.describe")) == ast.dump(_def(stub, "Counter.describe"))


def test_release_copies_what_students_need_and_nothing_else(toy_release):
    import nbformat

    assert (toy_release / "tests" / "test_toy.py").read_text() == TOY_TESTS
    assert (toy_release / "lecturelib" / "homework" / "__main__.py").is_file()
    assert (toy_release / "pyproject.toml").is_file() and (toy_release / "HOMEWORK.md").is_file()
    assert not (toy_release / "homework").exists() and not (toy_release / ".ci").exists()
    assert "hidden" not in "".join(p.name for p in toy_release.rglob("*"))
    nb = nbformat.read(toy_release / "chapters" / "01_toy.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None and "execution" not in c.metadata
                        for c in code)


def test_release_fails_loudly_on_unknown_exercise(toy, tmp_path):
    bad = (*TOY_EXERCISES, Exercise("lecturelib.toy.cube", 1, "x**3"))
    with pytest.raises(ReleaseError, match=r"lecturelib\.toy\.cube.*no function 'cube'"):
        release(tmp_path / "out", root=toy, exercises=bad)
    assert not (tmp_path / "out").exists()  # nothing half-written
    with pytest.raises(ReleaseError, match="does not exist"):
        release(tmp_path / "out", root=toy, exercises=[Exercise("lecturelib.nope.f", 1, "h")])
    with pytest.raises(ReleaseError, match="inside the repository"):
        release(toy / "out", root=toy, exercises=TOY_EXERCISES)


def test_release_refuses_to_overwrite(toy, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ReleaseError, match="not empty"):
        release(tmp_path, root=toy, exercises=TOY_EXERCISES)
    assert (tmp_path / "keep.txt").exists()


def test_stub_source_rejects_missing_docstring_and_bad_declarations():
    with pytest.raises(ReleaseError, match="docstring"):
        stub_source("def f(x):\n    return x\n", [Exercise("lecturelib.m.f", 1, "h")])
    with pytest.raises(ValueError, match="lecturelib.<module>.<function>"):
        Exercise("optim.sgd", 1, "h")
    with pytest.raises(ValueError, match="points"):
        Exercise("lecturelib.m.f", 0, "h")
    with pytest.raises(ValueError, match="twice"):
        hw_exercises.validate([Exercise("lecturelib.m.f", 1, "h")] * 2)
    assert [e.name for e in select(TOY_EXERCISES, "01_toy")] == [e.name for e in TOY_EXERCISES]
    with pytest.raises(ValueError, match="chapters with exercises: toy"):
        select(TOY_EXERCISES, "optimz")
    assert [e.name for e in select(TOY_EXERCISES, "Counter.step")] == ["lecturelib.toy.Counter.step"]


def test_check_accepts_module_notebook_and_exercise_names():
    optim = [e.name for e in EXERCISES if e.chapter == "optim"]
    assert optim
    for key in ("optim", "02_optimization", "chapters/02_optimization.ipynb", "test_optim"):
        assert [e.name for e in select(EXERCISES, key)] == optim
    assert [e.name for e in select(EXERCISES, "adam_update")] == ["lecturelib.optim.adam_update"]
    assert [e.name for e in select(EXERCISES, "dropout")] == ["lecturelib.regularization.dropout"]


# --- check -----------------------------------------------------------------------------------

def _cli(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "lecturelib.homework", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_check_on_untouched_release_says_todo_with_hints(toy_release):
    res = _cli(toy_release, "check", "toy")
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout
    assert "TODO  square" in out and "hint: multiply x by itself" in out
    assert "TODO  Counter.step" in out and "0/4 points" in out
    assert "Traceback" not in out + res.stderr and "=====" not in out


def test_check_explains_failures_without_tracebacks(toy_release, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(toy_release, copy)
    mod = copy / "lecturelib" / "toy.py"
    src = mod.read_text()
    tree = ast.parse(src)
    lines = src.splitlines(keepends=True)
    # square: wrong for negatives; Counter.step: correct
    for qual, body in [("square", "return x * np.abs(x)"), ("Counter.step", "self.n += k\n        return self.n")]:
        node = _def(tree, qual)
        raise_stmt = node.body[1]
        indent = " " * raise_stmt.col_offset
        lines[raise_stmt.lineno - 1: raise_stmt.end_lineno] = [indent + body + "\n"]
        src = "".join(lines)
        tree, lines = ast.parse(src), src.splitlines(keepends=True)
    mod.write_text(src)
    res = _cli(copy, "check")
    out = res.stdout
    assert res.returncode == 1
    assert "PART  square" in out and "2/3 tests" in out  # shapes pass, values do not
    assert "Max relative difference" in out and "checked: tests/test_toy.py" in out
    assert "PASS  Counter.step" in out and "TODO  norm" in out
    assert "Traceback" not in out + res.stderr


def test_check_reports_a_module_that_does_not_import(toy_release, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(toy_release, copy)
    (copy / "lecturelib" / "toy.py").write_text("def square(x:\n")
    res = _cli(copy, "check")
    assert "could not be imported" in res.stdout and "SyntaxError" in res.stdout, res.stdout
    assert "ERR   square" in res.stdout


# --- grade -----------------------------------------------------------------------------------

def _student(release_dir: Path, dest: Path, body: str | None) -> Path:
    """A student copy whose ``square`` body is ``body`` (None: untouched release)."""
    shutil.copytree(release_dir, dest)
    if body is not None:
        mod = dest / "lecturelib" / "toy.py"
        src = mod.read_text()
        stub = src[src.index("    raise NotImplementedError", src.index("def square")):]
        stub = stub[: stub.index("\n") + 1]
        mod.write_text(src.replace(stub, textwrap.indent(textwrap.dedent(body), "    ") + "\n", 1))
    return dest


def _zip(folder: Path, dest: Path, prefix: str = "mycopy/") -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in folder.rglob("*"):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(folder).as_posix())
    return dest


def test_grade_reference_full_release_zero_and_hostile_submissions(toy, toy_release, tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copytree(toy, subs / "reference", ignore=shutil.ignore_patterns("homework"))
    shutil.copytree(toy_release, subs / "untouched")
    _zip(toy, subs / "zipped.zip")
    _student(toy_release, subs / "hangs", "while x.size == 7:\n    pass\nreturn x * x")
    _student(toy_release, subs / "swallows", "while x.size == 7:\n    try:\n        import time; time.sleep(10)\n"
             "    except BaseException:\n        pass\nreturn x * x")
    _student(toy_release, subs / "crashes", "import os\nos._exit(3)")
    _student(toy_release, subs / "floods", "print('x' * 5_000_000)\nreturn x * x")
    _student(toy_release, subs / "deletes", "import shutil, pathlib\n"
             "shutil.rmtree(pathlib.Path(__file__).resolve().parents[1], ignore_errors=True)\nreturn x * x")
    (subs / "garbage.zip").write_bytes(b"this is not a zip file")
    (subs / "notes.txt").write_text("not a submission")
    with zipfile.ZipFile(subs / "escape.zip", "w") as zf:
        zf.writestr("../../evil.py", "x = 1")
    before = sorted(str(p) for p in subs.rglob("*"))

    lines = []
    out = tmp_path / "grades.csv"
    settings = GradeSettings(test_timeout=2, total_timeout=60, max_output=200_000, max_file_bytes=2**20)
    totals = grade(subs, out, reference=toy, exercises=TOY_EXERCISES, settings=settings, jobs=2,
                   log=lines.append)
    assert sorted(str(p) for p in subs.rglob("*")) == before  # submissions untouched
    assert not (tmp_path / "evil.py").exists()

    rows = list(csv.DictReader(open(out)))
    by = {(r["student"], r["exercise"].rsplit(".", 1)[-1]): r for r in rows}
    students = {r["student"] for r in rows}
    assert students == {"reference", "untouched", "zipped", "hangs", "swallows", "crashes", "floods",
                        "deletes", "garbage", "notes.txt", "escape"}
    assert len(rows) == len(students) * len(TOY_EXERCISES)
    assert totals["reference"] == totals["zipped"] == 4, by
    assert totals["untouched"] == 0
    assert {by["untouched", n]["status"] for n in ("square", "norm", "step")} == {"todo"}
    # hidden tests count: square has 3 public + 1 hidden tests, norm 2 + 1
    assert by["reference", "square"]["tests_total"] == "4" and by["reference", "norm"]["tests_total"] == "3"
    for student, word in [("hangs", "longer than"), ("swallows", "time limit"), ("crashes", "exited with code 3")]:
        r = by[student, "square"]
        assert word in r["detail"], r
        assert r["points"] == ("0" if student == "crashes" else "1.5"), r  # the other 3 tests pass
        assert by[student, "norm"]["status"] == "todo"  # the rest still graded
    assert float(by["floods", "square"]["points"]) < 2  # flooding is not free
    assert by["deletes", "square"]["status"] in ("pass", "partial", "fail")
    for student, word in [("garbage", "not a valid zip"), ("notes.txt", "neither a folder"), ("escape", "unsafe path")]:
        assert all(by[student, n]["status"] == "error" and word in by[student, n]["detail"]
                   for n in ("square", "norm", "step")), by[student, "square"]
    feedback = tmp_path / "grades_feedback"
    assert (feedback / "reference.txt").read_text().startswith("Feedback for reference: 4/4 points")
    assert "hint: multiply x by itself" in (feedback / "untouched.txt").read_text()
    totals_csv = list(csv.DictReader(open(tmp_path / "grades_totals.csv")))
    assert {r["student"]: r["points"] for r in totals_csv}["reference"] == "4"


def test_grade_ignores_edited_tests_and_helpers(toy, toy_release, tmp_path):
    subs = tmp_path / "subs"
    cheat = _student(toy_release, subs / "cheat", None)
    (cheat / "tests" / "test_toy.py").write_text("def test_square_x():\n    pass\n")
    totals = grade(subs, tmp_path / "g.csv", reference=toy, exercises=TOY_EXERCISES, settings=FAST,
                   log=lambda s: None)
    assert totals == {"cheat": 0}


# ---------------------------------------------------------------------------------------------
# The real book: the declaration in lecturelib/homework/exercises.py.

@pytest.fixture(scope="module")
def book_release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bookrelease") / "student"
    release(out)
    return out


def test_book_release_stubs_every_declared_exercise(book_release):
    assert EXERCISES, "no exercises declared"
    for ex in EXERCISES:
        orig = ast.parse((ROOT / ex.path).read_text())
        stub = ast.parse((book_release / ex.path).read_text())
        a, b = _def(orig, ex.qualname), _def(stub, ex.qualname)
        assert ast.dump(a.args) == ast.dump(b.args), ex.name
        assert ast.get_docstring(a) == ast.get_docstring(b), ex.name
        assert [type(s) for s in b.body] == [ast.Expr, ast.Raise], ex.name
        assert f"Exercise {ex.name} " in ast.literal_eval(b.body[1].exc.args[0])
    readme = (book_release / "HOMEWORK.md").read_text()
    assert all(f"`{ex.name}`" in readme for ex in EXERCISES)
    assert f"Total: {sum(e.points for e in EXERCISES):g} points" in readme


def test_book_release_leaves_hidden_tests_behind_and_clears_notebooks(book_release):
    import nbformat

    assert (ROOT / "homework" / "hidden_tests").is_dir()
    assert not (book_release / "homework").exists() and not (book_release / ".git").exists()
    assert not list(book_release.rglob("*hidden*"))
    assert not (book_release / "tests" / "test_homework.py").exists()  # instructor-only machinery tests
    for ch in chapters(EXERCISES):
        assert (book_release / public_test_file(ch)).read_text() == (ROOT / public_test_file(ch)).read_text()
    for nb_path in book_release.rglob("*.ipynb"):
        nb = nbformat.read(nb_path, as_version=4)
        nbformat.validate(nb)
        assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")


def test_book_release_installs(book_release, tmp_path):
    """The student copy builds as a package (pyproject) and carries the exercise modules."""
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "--no-index", "-q", "-w", str(tmp_path), str(book_release)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = tmp_path.glob("lecturelib-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {ex.path for ex in EXERCISES} <= names


def test_every_exercise_has_public_and_hidden_tests(tmp_path):
    from lecturelib.homework.grade import build_base, default_hidden_dir
    from lecturelib.homework.exercises import hidden_test_file

    base = tmp_path / "base"
    build_base(ROOT, default_hidden_dir(ROOT), base)
    files = [f for ch in chapters(EXERCISES) for f in (public_test_file(ch), f"tests_hidden/{hidden_test_file(ch)}")]
    rep = collect(base, files, sorted({p for e in EXERCISES for p in e.test_patterns}))
    assert not rep.collect_errors and not rep.problems, (rep.collect_errors, rep.problems)
    for ex in EXERCISES:
        mine = [i for i in rep.collected if ex.covers(i.rsplit("::", 1)[-1])]
        assert any(i.startswith(public_test_file(ex.chapter)) for i in mine), f"{ex.name}: no public tests"
        assert any(i.startswith("tests_hidden/") for i in mine), f"{ex.name}: no hidden tests"


# A few exercises whose tests are fast; the full declaration is checked the same way by
# `python -m lecturelib.homework grade` on the reference and the release (see instructors.md).
SUBSET = ("lecturelib.second_order.lbfgs_direction", "lecturelib.regularization.dropout_backward")


def test_reference_scores_full_marks_and_untouched_release_zero(book_release, tmp_path):
    subset = [e for e in EXERCISES if e.name in SUBSET]
    assert len(subset) == len(SUBSET)
    subs = tmp_path / "subs"
    for who, src in [("reference", ROOT), ("untouched", book_release)]:
        (subs / who / "lecturelib").mkdir(parents=True)
        for e in subset:
            shutil.copy2(src / e.path, subs / who / e.path)
    out = tmp_path / "grades.csv"
    totals = grade(subs, out, exercises=subset, settings=GradeSettings(test_timeout=120, total_timeout=400),
                   jobs=2, log=lambda s: None)
    full = sum(e.points for e in subset)
    rows = list(csv.DictReader(open(out)))
    assert totals == {"reference": full, "untouched": 0}, rows
    assert all(r["status"] in ("todo", "blocked") for r in rows if r["student"] == "untouched")


def test_instructors_page_lists_the_declaration():
    page = (ROOT / "instructors.md").read_text()
    for ex in EXERCISES:
        assert f"`{ex.name}` ({ex.points:g})" in page, f"instructors.md does not list {ex.name}"
    total = sum(e.points for e in EXERCISES)
    assert f"{len(EXERCISES)} exercises worth {total:g} points" in page
    for command in ("release OUT_DIR", "check [CHAPTER]", "grade SUBMISSIONS_DIR --out grades.csv"):
        assert f"python -m lecturelib.homework {command}" in page
