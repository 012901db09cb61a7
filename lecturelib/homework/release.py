"""``release OUT_DIR``: the student copy of the book.

Exercise bodies are replaced through the AST (signature, decorators and docstring stay, the body
becomes ``raise NotImplementedError(<hint>)``), notebooks are copied with outputs cleared, public
tests come along, and what the instructor keeps (``homework/`` with the hidden tests, git history,
CI, build outputs) stays behind.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Sequence

from .exercises import EXERCISES, Exercise, chapters, public_test_file, validate

# Never copied into the student copy: instructor-only material and machine-local state.
EXCLUDED_TOP = {".git", ".ci", ".github", "homework", "_build", ".venv", ".jupyter_cache", ".cache",
                ".whl", ".gl", "reports"}
# The homework machinery's own tests compare the reference with the release: instructor-only too.
EXCLUDED_FILES = {"tests/test_homework.py"}
EXCLUDED_NAMES = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints", ".DS_Store"}
EXCLUDED_SUFFIXES = (".pyc", ".egg-info")


class ReleaseError(RuntimeError):
    """The release cannot be made (an exercise that does not exist, an unsafe output folder)."""


def repo_root() -> Path:
    """The repository this ``lecturelib`` was imported from."""
    return Path(__file__).resolve().parents[2]


def stub_message(ex: Exercise) -> str:
    pts = f"{ex.points:g} point" + ("" if ex.points == 1 else "s")
    return f"Exercise {ex.name} ({pts}): {ex.hint.strip()}"


def _find_def(tree: ast.Module, qualname: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    scope: list[ast.stmt] = tree.body
    parts = qualname.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        kinds = (ast.FunctionDef, ast.AsyncFunctionDef) if last else (ast.ClassDef,)
        found = [n for n in scope if isinstance(n, kinds) and n.name == part]
        if not found:
            return None
        node = found[-1]  # the binding that wins at import time
        if last:
            return node  # type: ignore[return-value]
        scope = node.body  # type: ignore[attr-defined]
    return None


def _raise_lines(msg: str, indent: str) -> list[str]:
    words, chunks, cur = msg.split(" "), [], ""
    for w in words:
        if cur and len(cur) + len(w) > 72:
            chunks.append(cur)
            cur = ""
        cur += w + " "
    chunks.append(cur.rstrip())
    if len(chunks) == 1:
        return [f"{indent}raise NotImplementedError({chunks[0]!r})\n"]
    inner = indent + "    "
    return [f"{indent}raise NotImplementedError(\n", *[f"{inner}{c!r}\n" for c in chunks], f"{indent})\n"]


def stub_source(source: str, exercises: Sequence[Exercise], filename: str = "<module>") -> str:
    """``source`` with each exercise's body replaced by ``raise NotImplementedError(hint)``.

    Raises ``ReleaseError`` naming the exercise when a function is missing or has no docstring
    (students need the contract: shapes, what to return).
    """
    tree = ast.parse(source, filename=filename)
    lines = source.splitlines(keepends=True)
    edits = []
    for ex in exercises:
        node = _find_def(tree, ex.qualname)
        if node is None:
            raise ReleaseError(
                f"exercise {ex.name} is declared in lecturelib/homework/exercises.py but {filename} "
                f"has no function {ex.qualname!r}: fix the name or remove the entry"
            )
        if ast.get_docstring(node) is None:
            raise ReleaseError(f"exercise {ex.name} has no docstring; students need its contract")
        doc = node.body[0]
        if doc.lineno == node.lineno:
            raise ReleaseError(f"exercise {ex.name}: put the docstring on its own line below the def")
        indent = lines[doc.lineno - 1][: doc.col_offset]
        start, end = doc.end_lineno, node.end_lineno  # 1-based; replace lines start+1..end
        # trailing comments still indented inside the function belong to it (they may hold the answer)
        k = end
        while k < len(lines):
            text = lines[k]
            if not text.strip():
                k += 1
                continue
            if text.lstrip().startswith("#") and len(text) - len(text.lstrip()) > node.col_offset:
                end = k + 1
                k += 1
                continue
            break
        edits.append((start, end, _raise_lines(stub_message(ex), indent), ex))
    edits.sort(key=lambda e: e[0])
    for (s1, e1, _, a), (s2, _, _, b) in zip(edits, edits[1:]):
        if s2 < e1:
            raise ReleaseError(f"exercises {a.name} and {b.name} are nested; declare only one")
    for start, end, new, _ in reversed(edits):
        lines[start:end] = new
    out = "".join(lines)
    ast.parse(out, filename=filename)  # a stub that does not parse is a bug here, not the student's
    return out


def _files(root: Path) -> list[Path]:
    """Files to consider: git's view (tracked + untracked, not ignored) when available."""
    try:
        res = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root, capture_output=True, check=True, timeout=60,
        )
        rels = [Path(p) for p in res.stdout.decode().split("\0") if p]
        return sorted({r for r in rels if (root / r).is_file()})
    except (OSError, subprocess.SubprocessError):
        return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def _excluded(rel: Path) -> bool:
    parts = rel.parts
    return (
        rel.as_posix() in EXCLUDED_FILES
        or parts[0] in EXCLUDED_TOP
        or any(p in EXCLUDED_NAMES or p.endswith(EXCLUDED_SUFFIXES) for p in parts)
    )


def clear_notebook(src: Path, dst: Path) -> None:
    """Copy a notebook with outputs, execution counts and execution metadata removed."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    nbformat.validate(nb)
    nbformat.write(nb, dst)


def _readme(exercises: Sequence[Exercise]) -> str:
    rows = "\n".join(
        f"| `{e.name}` | {e.points:g} | `{public_test_file(e.chapter)}` |" for e in exercises
    )
    total = sum(e.points for e in exercises)
    return textwrap.dedent(
        """\
        # Homework

        Implement the functions below. Each one keeps its signature and docstring (the contract:
        shapes, what to return); its body is `raise NotImplementedError(...)` with a hint.
        Edit only the exercise modules in `lecturelib/`: grading takes those files from your copy
        and runs the public tests you have here plus hidden tests.

        Install and check your work:

            python -m pip install -e .
            python -m lecturelib.homework check            # every chapter
            python -m lecturelib.homework check optim      # one chapter

        | Exercise | Points | Public tests |
        |---|---|---|
        """
    ) + rows + f"\n\n**Total: {total:g} points.**\n"


def release(
    out_dir: str | os.PathLike,
    root: str | os.PathLike | None = None,
    exercises: Sequence[Exercise] = EXERCISES,
    force: bool = False,
) -> list[str]:
    """Write the student copy of the repository at ``root`` into ``out_dir``.

    Returns the relative paths written. Fails (``ReleaseError``) before writing anything when an
    exercise does not exist, ``out_dir`` is inside ``root`` or is a non-empty folder (unless
    ``force``).
    """
    root = Path(root or repo_root()).resolve()
    out = Path(out_dir).resolve()
    validate(exercises)
    if not exercises:
        raise ReleaseError("no exercises declared in lecturelib/homework/exercises.py")
    if out == root or root in out.parents:
        raise ReleaseError(f"output folder {out} is inside the repository {root}; pick one outside")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ReleaseError(f"output folder {out} is not empty (use --force to replace it)")
        shutil.rmtree(out)

    # Build every stubbed module in memory first: a missing exercise fails before any write.
    stubbed: dict[str, str] = {}
    for ch in chapters(exercises):
        mine = [e for e in exercises if e.chapter == ch]
        src_path = root / mine[0].path
        if not src_path.is_file():
            raise ReleaseError(
                f"exercise {mine[0].name} is declared but {mine[0].path} does not exist in {root}"
            )
        stubbed[mine[0].path] = stub_source(src_path.read_text(), mine, filename=mine[0].path)
        if not (root / public_test_file(ch)).is_file():
            raise ReleaseError(f"chapter {ch} has exercises but no public tests {public_test_file(ch)}")

    written = []
    out.mkdir(parents=True, exist_ok=True)
    for rel in _files(root):
        if _excluded(rel):
            continue
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        key = rel.as_posix()
        if key in stubbed:
            dst.write_text(stubbed[key])
        elif rel.suffix == ".ipynb":
            clear_notebook(root / rel, dst)
        else:
            shutil.copy2(root / rel, dst)
        written.append(key)
    missing = sorted(set(stubbed) - set(written))
    if missing:
        raise ReleaseError(f"exercise modules not part of the repository (untracked and ignored?): {missing}")
    (out / "HOMEWORK.md").write_text(_readme(exercises))
    written.append("HOMEWORK.md")
    (out / ".homework-release.json").write_text(
        json.dumps({"exercises": [e.name for e in exercises]}, indent=1) + "\n"
    )
    return written
