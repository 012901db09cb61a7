"""Run pytest in a separate process and read back per-test results, whatever the tests do.

The child writes one JSON line per event (see ``_pytest_plugin``). The parent enforces a time limit
per test (inside the child) and per run (killing the whole process group), caps what the child may
print and the size of any file it writes, and, when the child dies mid-test (crash, ``os._exit``,
time limit, output flood), records that test as failed with the reason and starts a new child for
the tests not run yet, so one bad function does not cost the points of the others.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

PLUGIN = "lecturelib.homework._pytest_plugin"


@dataclass
class TestResult:
    """One test's outcome, condensed for people (no traceback)."""

    __test__ = False  # not a pytest test class
    nodeid: str
    file: str
    name: str
    outcome: str  # passed | failed | skipped
    kind: str = ""  # todo | assert | error | timeout | crash | output | notrun
    message: str = ""
    where: str = ""
    test_line: str = ""

    @property
    def base(self) -> str:
        return self.name.split("[", 1)[0]


@dataclass
class RunReport:
    results: list[TestResult] = field(default_factory=list)
    collect_errors: dict[str, str] = field(default_factory=dict)  # file -> message
    problems: list[str] = field(default_factory=list)  # run-level notes (time limit, crash, ...)
    lecturelib: str | None = None  # where the child imported lecturelib from
    collected: list[str] = field(default_factory=list)  # node ids of the first collection


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except (ValueError, AttributeError):
        return f"signal {-rc}"


def _limits(max_file_bytes: int):
    def apply():  # runs in the child before exec
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_tests(
    root: str | os.PathLike,
    files: Sequence[str],
    select: Sequence[str] | None = None,
    *,
    test_timeout: float = 60.0,
    total_timeout: float = 600.0,
    max_output: int = 1_000_000,
    max_file_bytes: int = 64 * 2**20,
    max_restarts: int = 8,
    python: str = sys.executable,
    env: dict | None = None,
) -> RunReport:
    """Run the tests in ``files`` (relative to ``root``), optionally only those whose function
    names match ``select``; return every test's result, including those that never got to run."""
    root = Path(root).resolve()
    report = RunReport()
    done: dict[str, TestResult] = {}
    started_at = time.monotonic()
    files = [f for f in files if (root / f).is_file()]
    if not files:
        return report
    work = Path(tempfile.mkdtemp(prefix="hw-run-"))
    child_env = dict(os.environ if env is None else env)
    child_env.update(
        PYTHONPATH=str(root) + os.pathsep + child_env.get("PYTHONPATH", ""),
        PYTHONDONTWRITEBYTECODE="1", LECTURELIB_PROGRESS="0", MPLBACKEND="Agg",
        LECTURELIB_SCALE="quick", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
    )
    child_env.pop("PYTEST_ADDOPTS", None)
    try:
        for attempt in range(max_restarts + 1):
            left = total_timeout - (time.monotonic() - started_at)
            if left <= 1:
                report.problems.append(f"time limit of {total_timeout:g} s for all tests reached")
                break
            log = work / f"events-{attempt}.jsonl"
            skip = work / f"skip-{attempt}.txt"
            skip.write_text("\n".join(done))
            cmd = [python, "-m", "pytest", *files, "-p", PLUGIN, "-p", "no:cacheprovider",
                   "-q", "--tb=no", "--no-header", "-rN", "-o", "addopts=",
                   f"--rootdir={root}", f"--homework-report={log}", f"--homework-skip={skip}",
                   f"--homework-test-timeout={test_timeout:g}"]
            if select is not None:
                cmd.append("--homework-select=" + json.dumps(list(select)))
            rc, why = _run(cmd, root, child_env, left, max_output, max_file_bytes, log, test_timeout)
            events = _read_events(log)
            current = None
            finished = False
            for ev in events:
                kind = ev.get("event")
                if kind == "session" and report.lecturelib is None:
                    report.lecturelib = ev.get("lecturelib")
                elif kind == "collected" and attempt == 0:
                    report.collected = list(ev["nodeids"])
                elif kind == "collect_error":
                    report.collect_errors.setdefault(ev["file"], ev["message"])
                elif kind == "start":
                    current = ev["nodeid"]
                elif kind == "result":
                    r = TestResult(**{k: ev.get(k, "") for k in
                                      ("nodeid", "file", "name", "outcome", "kind", "message", "where",
                                       "test_line")})
                    done[ev["nodeid"]] = r
                    current = None
                elif kind == "done":
                    finished = True
            if finished and why is None:
                if rc not in (0, 1, 5) and not done:  # 2-4: interrupted / internal / usage error
                    report.problems.append(f"pytest stopped with exit code {rc}")
                break
            if why is None:
                why = (f"the test process was killed by {_signal_name(rc)}" if rc < 0
                       else f"the test process exited with code {rc} before finishing")
                if rc == -getattr(signal, "SIGXFSZ", 25):
                    why += f" (a file grew past {max_file_bytes // 2**20} MB)"
            if current is None:  # died outside a test: collection or start-up
                report.problems.append(why)
                break
            file, name = current.split("::", 1)[0], current.rsplit("::", 1)[-1]
            kind = "timeout" if "time limit" in why else "output" if "output" in why else "crash"
            done[current] = TestResult(current, file, name, "failed", kind, why)
        else:
            report.problems.append(f"gave up after {max_restarts} restarts")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.results = list(done.values())
    return report


def _run(cmd, cwd, env, timeout, max_output, max_file_bytes, log, test_timeout):
    """Run ``cmd`` in its own process group; return (exit code, reason it was stopped or None).

    Besides the overall ``timeout``, a test still running ``test_timeout`` plus a grace period
    after its start event (one that swallowed the in-process alarm, or hangs in C code) gets the
    group killed.
    """
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_limits(max_file_bytes),
    )
    state = {"bytes": 0, "flood": False}

    def drain():
        for chunk in iter(lambda: proc.stdout.read(65536), b""):
            state["bytes"] += len(chunk)
            if state["bytes"] > max_output and not state["flood"]:
                state["flood"] = True
                _kill(proc)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    why = None
    t0 = time.monotonic()
    seen_size, last_event, last_change = -1, None, t0
    while proc.poll() is None:
        time.sleep(0.2)
        now = time.monotonic()
        if now - t0 > timeout:
            why = f"stopped at the time limit ({timeout:.0f} s left for this submission)"
            break
        size = log.stat().st_size if log.exists() else 0
        if size != seen_size:
            seen_size, last_change = size, now
            events = _read_events(log)
            last_event = events[-1].get("event") if events else None
        grace = min(10.0, max(2.0, test_timeout))
        if test_timeout > 0 and last_event == "start" and now - last_change > test_timeout + grace:
            why = f"stopped at the per-test time limit ({test_timeout:g} s)"
            break
    if why is not None:
        _kill(proc)
    proc.wait()
    reader.join(timeout=10)
    if state["flood"]:
        why = f"stopped: printed more than {max_output // 1000} kB of output"
    return proc.returncode, why


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut off by a kill
    return events


def collect(root, files: Sequence[str], select: Sequence[str] | None = None, python: str = sys.executable,
            timeout: float = 300) -> RunReport:
    """Collect (without running) the tests ``run_tests`` would run: node ids and import errors."""
    root = Path(root).resolve()
    report = RunReport()
    files = [f for f in files if (root / f).is_file()]
    if not files:
        return report
    with tempfile.TemporaryDirectory(prefix="hw-collect-") as work:
        log = Path(work) / "events.jsonl"
        cmd = [python, "-m", "pytest", *files, "--collect-only", "-q", "-p", PLUGIN, "-p", "no:cacheprovider",
               "-o", "addopts=", f"--rootdir={root}", f"--homework-report={log}"]
        if select is not None:
            cmd.append("--homework-select=" + json.dumps(list(select)))
        env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        for ev in _read_events(log):
            if ev.get("event") == "collected":
                report.collected = list(ev["nodeids"])
            elif ev.get("event") == "collect_error":
                report.collect_errors.setdefault(ev["file"], ev["message"])
            elif ev.get("event") == "session":
                report.lecturelib = ev.get("lecturelib")
        if proc.returncode not in (0, 5) and not report.collect_errors:
            report.problems.append(f"pytest --collect-only failed ({proc.returncode}): {proc.stdout[-2000:]}")
    return report
