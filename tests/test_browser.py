"""A real browser: JupyterLab runs notebook 01, a mouse drags the timestep slider, and the picture changes.

This is the one test that sees what a learner sees: the widgets render, the kernel answers a slider
moved by hand, and the figure is redrawn. It starts JupyterLab on localhost (on a copy of the
notebook, so nothing in notebooks/ is autosaved over) and drives Debian's headless Chromium with
Playwright. CI installs Chromium (`.ci/run`); elsewhere the test is skipped when no Chromium is found.
"""

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

from course_tools import build

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI") == "true":
    pytest.fail("CI needs Debian's Chromium for the browser test: apt-get install chromium", pytrace=False)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a copy of notebook 01 (demo training shortened) from a temporary folder."""
    nb = nbformat.read(build.NOTEBOOKS / "01_gaussian_noise.ipynb", as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = re.sub(r"DEMO_TRAIN_STEPS = \d+", "DEMO_TRAIN_STEPS = 20", cell.source)
    nbformat.write(nb, tmp_path / "01_gaussian_noise.ipynb")
    # JupyterLab 4 renders only the cells in view ("windowing"); render all, so the slider's cell exists.
    settings = tmp_path / ".lab-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / ".jupyter"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / ".lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / ".lab-workspaces"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / ".runtime")}
    as_root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []   # CI containers run as root
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", *as_root],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"JupyterLab stopped: {(tmp_path / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail(f"JupyterLab did not answer in 60 s: {(tmp_path / 'lab.log').read_text()[-2000:]}")
        yield url, token, tmp_path
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _accept_dialogs(page, seconds: float = 8.0) -> None:
    """Press the default button of any dialog JupyterLab shows (kernel choice) during the next few seconds."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        button = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
        if button.count():
            button.first.click()
        time.sleep(0.5)


def _menu(page, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{item}$")).first.click()


def test_timestep_slider_redraws_the_digit_in_a_real_browser(lab):
    from playwright.sync_api import sync_playwright

    url, token, folder = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/tree/01_gaussian_noise.ipynb?token={token}")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
            _accept_dialogs(page)                        # "Select Kernel": take the notebook's own
            _menu(page, "Edit", "Clear Outputs of All Cells")   # no stored figure can pass for a new one
            _menu(page, "Run", "Run All Cells")
            _accept_dialogs(page)

            # the slider's box: the slider, then the Output widget with the figure
            box = page.locator(".widget-vbox", has=page.locator(".widget-slider")).first
            try:
                box.wait_for(timeout=240_000)
            except Exception:
                page.screenshot(path=str(folder / "failure.png"), full_page=True)
                raise
            box.scroll_into_view_if_needed()
            image = box.locator("img").first
            image.wait_for(timeout=120_000)
            before_src, before_shot = image.get_attribute("src"), box.screenshot()
            readout = box.locator(".widget-readout").first
            before_value = readout.inner_text().strip()

            handle = box.locator(".noUi-handle").first
            start = handle.bounding_box()
            x, y = start["x"] + start["width"] / 2, start["y"] + start["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + 250, y, steps=10)     # drag right: a later timestep, more noise
            page.mouse.up()

            deadline = time.time() + 120
            while time.time() < deadline and image.get_attribute("src") in (before_src, None):
                time.sleep(0.5)
                image = box.locator("img").first
            after_value = readout.inner_text().strip()
            after_src, after_shot = image.get_attribute("src"), box.screenshot()
        finally:
            browser.close()

    assert int(after_value) > int(before_value), (before_value, after_value)
    assert after_src and after_src != before_src, "the figure was not redrawn after the slider moved"
    assert after_shot != before_shot
    (folder / "slider_before.png").write_bytes(before_shot)
    (folder / "slider_after.png").write_bytes(after_shot)


def test_course_page_typesets_formulas_with_the_network_blocked(tmp_path):
    """Notebook 01's page, as `make course` writes it, opened with every network request refused."""
    from playwright.sync_api import sync_playwright

    page_path = tmp_path / "01_gaussian_noise.html"
    page_path.write_text(build.notebook_html(nbformat.read(build.NOTEBOOKS / "01_gaussian_noise.ipynb", as_version=4)))
    refused = []

    def refuse_the_network(route):
        if route.request.url.startswith(("file:", "data:")):
            return route.continue_()
        refused.append(route.request.url)
        return route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            page.route("**/*", refuse_the_network)
            page.goto(page_path.as_uri(), wait_until="load")
            formula = page.locator("math[display=block]").first    # x_t = sqrt(1 - beta_t) x_{t-1} + ...
            formula.scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "formula.png"))
            text = "\n".join(page.locator(".jp-MarkdownCell").all_inner_texts())     # the prose, not the code
            # typeset: a subscript sits below its base, and a fraction stacks its numerator over its denominator
            sub_drop = page.evaluate("""() => { const s = document.querySelector('math msub');
                return s.children[1].getBoundingClientRect().bottom - s.children[0].getBoundingClientRect().bottom; }""")
            frac_stack = page.evaluate("""() => { const f = document.querySelector('math mfrac');
                return f.children[1].getBoundingClientRect().top - f.children[0].getBoundingClientRect().bottom; }""")
        finally:
            browser.close()
    assert refused == [], f"the page asked the network for {refused}"
    assert "Markov chain" in text
    assert not re.search(r"\$[^$\n]{1,60}\$", text), "raw $...$ TeX is showing"
    assert "\\alpha" not in text and "\\sqrt" not in text
    assert sub_drop > 1, sub_drop
    assert frac_stack >= 0, frac_stack
