"""pytest plugin used by ``check`` and ``grade`` (loaded with ``-p``; not for direct use).

Writes one JSON line per event to ``--homework-report`` as it happens, so a run that is killed
(time limit, crash, output flood) still leaves the results of the tests that finished:
``start`` before a test, ``result`` after it, ``collect_error`` for a test file that cannot be
imported. Failure messages are condensed here (exception type, message, the student's line and
the test's assertion line) so nobody has to read a pytest traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from lecturelib.homework.exercises import match_test

MAX_LINES, MAX_CHARS = 14, 1500


class TestTimeout(Exception):
    """A test ran past the per-test time limit."""

    __test__ = False


def pytest_addoption(parser):
    g = parser.getgroup("homework")
    g.addoption("--homework-report", default=None, help="JSON-lines file to append events to")
    g.addoption("--homework-select", default=None, help="JSON list of fnmatch patterns on test names")
    g.addoption("--homework-skip", default=None, help="file with node ids to leave out, one a line")
    g.addoption("--homework-test-timeout", type=float, default=0.0, help="seconds per test (0: none)")


class _Recorder:
    def __init__(self, config):
        self.path = config.getoption("--homework-report")
        sel = config.getoption("--homework-select")
        self.select = json.loads(sel) if sel else None
        skip = config.getoption("--homework-skip")
        self.skip = set(Path(skip).read_text().splitlines()) if skip else set()
        self.timeout = config.getoption("--homework-test-timeout")
        self.root = Path(str(config.rootpath)).resolve()
        self.current: dict = {}
        self.fh = open(self.path, "a", buffering=1) if self.path else None

    def emit(self, **event):
        if self.fh:
            self.fh.write(json.dumps(event) + "\n")
            self.fh.flush()
            os.fsync(self.fh.fileno())

    def rel(self, path) -> str:
        try:
            return Path(str(path)).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    # --- collection -------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session):
        mod = sys.modules.get("lecturelib")
        self.emit(event="session", lecturelib=getattr(mod, "__file__", None), cwd=os.getcwd())

    def pytest_collectreport(self, report):
        if report.failed:
            self.emit(event="collect_error", file=self.rel(report.fspath),
                      message=_short(str(report.longrepr), from_end=True))

    def pytest_collection_modifyitems(self, session, config, items):
        keep, drop = [], []
        for item in items:
            ok = item.nodeid not in self.skip and (
                self.select is None or any(match_test(p, item.name) for p in self.select)
            )
            (keep if ok else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep

    def pytest_collection_finish(self, session):
        self.emit(event="collected", nodeids=[item.nodeid for item in session.items])

    # --- running ----------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid, location):
        self.current = {"nodeid": nodeid, "outcome": "passed", "message": "", "kind": "", "where": ""}
        self.t0 = time.perf_counter()
        self.emit(event="start", nodeid=nodeid)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        use_alarm = self.timeout > 0 and hasattr(signal, "SIGALRM")
        if use_alarm:
            def on_alarm(signum, frame):
                raise TestTimeout(f"took longer than {self.timeout:g} s (infinite loop?)")
            old = signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            yield
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        cur = self.current
        if report.skipped and cur["outcome"] == "passed":
            cur["outcome"] = "skipped"
            cur["message"] = _short(str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else "")
        elif report.failed and cur["outcome"] != "failed":
            cur["outcome"] = "failed"
            if call.excinfo is not None:
                cur.update(self.describe(call.excinfo, call.when))
            else:  # e.g. strict xpass
                cur.update(kind="error", message=_short(str(report.longrepr)))

    def describe(self, excinfo, when: str) -> dict:
        exc = excinfo.value
        name = type(exc).__name__
        text = str(exc).strip()
        if isinstance(exc, NotImplementedError) and text.startswith("Exercise "):
            kind, message = "todo", text
        elif isinstance(exc, TestTimeout):
            kind, message = "timeout", text
        elif isinstance(exc, AssertionError):
            kind, message = "assert", text or "AssertionError"
        else:
            kind, message = "error", f"{name}: {text}" if text else name
        if when != "call":
            message = f"(in test {when}) {message}"
        where, test_line = "", ""
        for entry in reversed(excinfo.traceback):
            rel = self.rel(entry.path)
            if not where and rel.startswith("lecturelib/") and not rel.startswith("lecturelib/homework/"):
                where = f"{rel}:{entry.lineno + 1} in {entry.name}"
            if not test_line and ("tests/" in rel or "hidden" in rel) and rel.endswith(".py"):
                try:
                    stmt = str(entry.statement).strip().splitlines()
                    test_line = f"{rel}:{entry.lineno + 1}: {stmt[0] if stmt else ''}"
                except Exception:
                    test_line = f"{rel}:{entry.lineno + 1}"
        return {"kind": kind, "message": _short(message), "where": where, "test_line": test_line}

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logfinish(self, nodeid, location):
        cur = dict(self.current)
        file = nodeid.split("::", 1)[0]
        name = nodeid.rsplit("::", 1)[-1]
        self.emit(event="result", file=file, name=name, duration=round(time.perf_counter() - self.t0, 3), **cur)

    def pytest_sessionfinish(self, session, exitstatus):
        self.emit(event="done", exitstatus=int(exitstatus))
        if self.fh:
            self.fh.close()
            self.fh = None


def _short(text: str, from_end: bool = False) -> str:
    lines = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()]
    if from_end and len(lines) > MAX_LINES:
        lines = ["..."] + lines[-MAX_LINES:]
    elif len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES] + [f"... ({len(lines) - MAX_LINES} more lines)"]
    out = "\n".join(lines)
    return out if len(out) <= MAX_CHARS else out[: MAX_CHARS - 4] + " ..."


def pytest_configure(config):
    if config.getoption("--homework-report") or config.getoption("--homework-select"):
        config.pluginmanager.register(_Recorder(config), "homework-recorder")
