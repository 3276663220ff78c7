"""The explorer as an evaluator uses it: JupyterLab in headless chromium, run 06_figures, change a widget.

Needs Debian's chromium (`apt-get install -y chromium`); skipped when it is absent. Playwright drives
that binary; it never downloads a browser.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from fastiov_lib.config import REPO_ROOT
from synthetic_runs import write_run

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook_with(params: dict[str, object], dest: Path) -> Path:
    nb = nbformat.read(REPO_ROOT / "notebooks" / "06_figures.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = [ln for ln in cell.source.splitlines() if not any(ln.startswith(f"{k} =") for k in params)]
    cell.source = "\n".join(lines + [f"{k} = {v!r}" for k, v in params.items()])
    nbformat.write(nb, dest)
    return dest


@pytest.fixture
def jupyter(tmp_path):
    """JupyterLab on localhost with a token, serving tmp_path; stopped (its process group) afterwards."""
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"), JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"))
    # render every cell (JupyterLab 4 otherwise only attaches cells scrolled into view)
    tracker = tmp_path / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text('{"windowingMode": "none"}')
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no news toast over the figures
    log = open(tmp_path / "jupyter.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={tmp_path}", "--allow-root",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start: {(tmp_path / 'jupyter.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_explorer_redraws_the_cdf_when_a_widget_changes(tmp_path, jupyter):
    playwright = pytest.importorskip("playwright.sync_api")
    run = write_run(tmp_path / "results" / "browser-run", variants={"bridge": 100.0}, concurrency=(1, 4, 8),
                    repeats=2, noise_ms=15.0)
    write_run(run, experiment="ablation", variants={"none": 90.0, "bridge": 130.0}, concurrency=(4,),
              append=True, start_ns=2 * 10**18)
    _notebook_with({"run_dir": str(run), "interactive": True}, tmp_path / "06_figures_interactive.ipynb")
    base, token = jupyter
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{base}/lab/tree/06_figures_interactive.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            accept = page.locator(".jp-Dialog .jp-mod-accept")  # JupyterLab may ask which kernel to start
            try:
                accept.wait_for(timeout=10_000)
                accept.click()
            except playwright.TimeoutError:
                pass
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
            page.click("#jp-MainMenu >> text=Run")
            page.click("li.lm-Menu-item >> text=Run All Cells")
            cdf = page.locator(".fiov-cdf img").first
            cdf.wait_for(timeout=90_000)
            cdf.scroll_into_view_if_needed()
            before = cdf.get_attribute("src")
            breakdown_before = page.locator(".fiov-breakdown img").first.get_attribute("src")
            page.screenshot(path=str(ARTIFACTS / "explorer-before.png"))
            page.locator(".fiov-concurrency select").select_option(label="4")
            page.wait_for_function(
                "old => { const i = document.querySelector('.fiov-cdf img'); return i && i.src !== old; }",
                arg=before, timeout=60_000)
            page.wait_for_function(
                "old => { const i = document.querySelector('.fiov-breakdown img'); return i && i.src !== old; }",
                arg=breakdown_before, timeout=60_000)
            after = page.locator(".fiov-cdf img").first.get_attribute("src")
            page.locator(".fiov-cdf").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "explorer.png"))
            claims_text = page.locator(".fiov-claims").inner_text()
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "explorer-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert before and after and before != after
    assert after.startswith("data:image/png")
    assert "L1-every-pod-recorded" in claims_text
    assert (ARTIFACTS / "explorer.png").stat().st_size > 10_000
