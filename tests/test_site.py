"""The built site, checked as a reader sees it: every page in the table of contents loads in
headless Chromium with no console errors or failed requests, its math is typeset offline, and a
chapter's output figures are present. The site is built from the stored notebook outputs
(execution off): nbval re-runs the notebooks; this checks what the book shows.

Screenshots go to ``_build/screenshots/``.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from site_check import check_pages, find_chromium

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build" / "site-check"


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


@pytest.fixture(scope="module")
def site() -> Path:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    # paths in the copied config are relative to it, so point them back at the book
    config["sphinx"]["local_extensions"] = {name: str(ROOT / path) for name, path in config["sphinx"]["local_extensions"].items()}
    BUILD.mkdir(parents=True, exist_ok=True)
    (BUILD / "_config.yml").write_text(yaml.safe_dump(config))
    jb = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run(
        [str(jb), "build", str(ROOT), "--config", str(BUILD / "_config.yml"),
         "--path-output", str(BUILD), "-W", "--keep-going"],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, "site build failed or warned:\n" + result.stdout[-4000:] + result.stderr[-4000:]
    return BUILD / "_build" / "html"


def test_every_toc_file_exists():
    for name in toc_files():
        assert any((ROOT / f"{name}{ext}").exists() for ext in (".md", ".ipynb")), f"{name} is in _toc.yml but missing"


@pytest.mark.skipif(find_chromium() is None, reason="needs Chromium: apt-get install chromium (.ci/run installs it)")
def test_pages_render_in_a_real_browser(site):
    pages = [f"{name}.html" for name in toc_files()]
    reports = check_pages(site, pages, screenshot_dir=ROOT / "_build" / "screenshots")
    problems = []
    for r in reports:
        if r.console_errors:
            problems.append(f"{r.page}: console errors {r.console_errors}")
        if r.failed_requests:
            problems.append(f"{r.page}: failed requests {r.failed_requests}")
        if r.math_errors:
            problems.append(f"{r.page}: {r.math_errors} formulas MathJax could not typeset")
        if r.math_source and r.math_typeset < r.math_source:
            problems.append(f"{r.page}: {r.math_source} math elements, only {r.math_typeset} typeset")
        if r.math_source and not all("/_static/mathjax/" in s for s in r.mathjax_src):
            problems.append(f"{r.page}: MathJax not served locally: {r.mathjax_src}")
        if r.images_broken:
            problems.append(f"{r.page}: {r.images_broken} of {r.images} images did not load")
        if r.page.startswith("chapters/") and r.images == 0:
            problems.append(f"{r.page}: a chapter page without any output figure")
        assert Path(r.screenshot).stat().st_size > 10_000
    assert not problems, "\n".join(problems)
    assert any(r.math_typeset for r in reports) or not any(r.math_source for r in reports)
