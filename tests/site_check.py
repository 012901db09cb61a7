"""Check built pages in a real browser: headless Chromium driven over the DevTools protocol.

For each page: load it from a local HTTP server, wait for MathJax, collect console errors,
uncaught exceptions and failed requests, count typeset formulas and loaded images, and save a
full-page screenshot. Used by ``tests/test_site.py``; also runnable by hand:

    python tests/site_check.py _build/html intro.html chapters/01_normalization.html
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import websocket  # websocket-client, a Jupyter dependency

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageReport:
    page: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    math_source: int = 0       # elements that should hold math (spans/divs with class "math")
    math_typeset: int = 0      # MathJax output containers
    math_errors: int = 0       # formulas MathJax could not parse
    images: int = 0
    images_broken: int = 0
    mathjax_src: list[str] = field(default_factory=list)
    screenshot: str = ""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class Browser:
    """A headless Chromium and one DevTools session on one tab."""

    def __init__(self, chromium: str):
        self.profile = tempfile.mkdtemp(prefix="site-check-")
        self.proc = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-extensions", "--hide-scrollbars",
             f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             "--window-size=1280,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("Chromium did not start (no DevToolsActivePort)")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        import urllib.request

        for _ in range(50):
            try:
                tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
                break
            except OSError:
                time.sleep(0.1)
        page = next(t for t in tabs if t.get("type") == "page")
        # No Origin header: Chromium 111+ rejects DevTools connections from an unlisted origin,
        # and requests without one are what its own clients send.
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params):
        self.next_id += 1
        msg_id = self.next_id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def drain(self, seconds: float) -> None:
        self.ws.settimeout(seconds)
        end = time.time() + seconds
        try:
            while time.time() < end:
                self.events.append(json.loads(self.ws.recv()))
        except websocket.WebSocketTimeoutException:
            pass
        finally:
            self.ws.settimeout(60)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


_WAIT_FOR_MATH = """
new Promise(resolve => {
  const done = () => resolve(true);
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) { mj.startup.promise.then(done, done); }
  else { setTimeout(done, 1500); }
  setTimeout(done, 20000);
})
"""

_INSPECT = """
(() => {
  const imgs = Array.from(document.querySelectorAll('main img, article img, .bd-article img'));
  return {
    math_source: document.querySelectorAll('.math').length,
    math_typeset: document.querySelectorAll('mjx-container').length,
    math_errors: document.querySelectorAll('mjx-merror, [data-mjx-error]').length,
    images: imgs.length,
    images_broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length,
    mathjax_src: Array.from(document.querySelectorAll('script[src*="mathjax" i]')).map(s => s.src),
    height: Math.min(document.documentElement.scrollHeight, 16000),
  };
})()
"""


def check_pages(html_dir: str | Path, pages: list[str], screenshot_dir: str | Path | None = None) -> list[PageReport]:
    """Load each page (paths relative to ``html_dir``) and report what the browser saw."""
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no Chromium found: install it (Debian: apt-get install chromium)")
    html_dir = Path(html_dir).resolve()
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    browser = Browser(chromium)
    reports = []
    try:
        for page in pages:
            browser.events.clear()
            browser.call("Page.navigate", url=base + page)
            deadline = time.time() + 60
            while not any(e.get("method") == "Page.loadEventFired" for e in browser.events):
                if time.time() > deadline:
                    raise RuntimeError(f"{page} did not finish loading in 60 s")
                browser.drain(0.2)
            browser.evaluate(_WAIT_FOR_MATH)
            browser.drain(0.5)
            info = browser.evaluate(_INSPECT)
            report = PageReport(page=page, **{k: v for k, v in info.items() if k != "height"})
            for e in browser.events:
                method, params = e.get("method"), e.get("params", {})
                if method == "Runtime.exceptionThrown":
                    report.console_errors.append(params["exceptionDetails"].get("text", "exception") + " "
                                                 + str(params["exceptionDetails"].get("exception", {}).get("description", "")))
                elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                    report.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
                elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                    report.console_errors.append(params["entry"].get("text", "") + " " + params["entry"].get("url", ""))
                elif method == "Network.loadingFailed" and not params.get("canceled"):
                    report.failed_requests.append(params.get("errorText", "failed"))
            if screenshot_dir is not None:
                Path(screenshot_dir).mkdir(parents=True, exist_ok=True)
                browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=int(info["height"]),
                             deviceScaleFactor=1, mobile=False)
                shot = browser.call("Page.captureScreenshot", format="png")
                browser.call("Emulation.clearDeviceMetricsOverride")
                path = Path(screenshot_dir) / (page.replace("/", "__").replace(".html", ".png"))
                path.write_bytes(base64.b64decode(shot["data"]))
                report.screenshot = str(path)
            reports.append(report)
    finally:
        browser.close()
        server.shutdown()
    return reports


if __name__ == "__main__":
    html, *names = sys.argv[1:]
    for r in check_pages(html, names, os.environ.get("SCREENSHOTS")):
        print(json.dumps(r.__dict__, indent=1))
