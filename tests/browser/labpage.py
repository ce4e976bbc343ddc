"""Small Playwright helpers that drive a JupyterLab 4 notebook page (used by test_jupyterlab.py)."""
from __future__ import annotations

import re
import time
from typing import List

GENERATED = "zz_explorers_smoke.ipynb"   # the notebook conftest.py writes next to the course ones
STDERR = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
IDLE = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
PROGRESS_BAR = re.compile(r"^\s*(\S.*?)?\d+%\|.*\|.*$")  # a tqdm line, not an error

# true when no cell is queued or running and the kernel says idle
_SETTLED_JS = """() => {
  const ind = document.querySelector('.jp-Notebook-ExecutionIndicator');
  const prompts = Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt'));
  return ind && ind.getAttribute('data-status') === 'idle' && !prompts.some(p => p.textContent.includes('*'));
}"""

# for each code cell with source: its prompt text ('[3]:' once it ran)
_PROMPTS_JS = """() => Array.from(document.querySelectorAll('.jp-CodeCell')).map(c => [
  (c.querySelector('.jp-InputArea-prompt') || {}).textContent || '',
  ((c.querySelector('.jp-InputArea-editor') || {}).textContent || '').trim().slice(0, 60)])"""


def open_notebook(page, lab, path: str, timeout_s: float = 90.0) -> None:
    """Open ``path`` (relative to the server root) and wait until its kernel is started and idle.

    The kernel is started through the REST API first, so it boots while the page works. The
    first call loads JupyterLab (a fresh workspace, so nothing earlier is reopened); later calls
    reuse the loaded app and go through File > Open from Path, which is much faster. The
    toolbar says "idle" for a moment *before* the kernel exists, so we also ask the server.
    """
    lab.start_kernel(path)
    if page.url.startswith(lab.url):
        menu(page, "File", "filebrowser:open-path")
        page.locator(".jp-Dialog input").fill(path)
        page.locator(".jp-Dialog .jp-mod-accept").click()
    else:
        page.goto(f"{lab.url}/lab/workspaces/t{time.monotonic_ns()}/tree/{path}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", state="attached", timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    while not lab.kernel_idle(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"no idle kernel for {path} after {timeout_s:.0f} s")
        page.wait_for_timeout(100)
    page.wait_for_selector(IDLE, timeout=timeout_s * 1000)
    page.wait_for_timeout(200)
    dialogs = page.locator(".jp-Dialog")
    assert dialogs.count() == 0, f"unexpected dialog: {dialogs.first.inner_text()!r}"


def close_all(page, timeout_s: float = 20.0) -> None:
    """File > Close All Tabs, answering "Discard" to any "Save your work?" dialog."""
    menu(page, "File", "application:close-all")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            discard = dialog.first.locator("button.jp-mod-warn")
            (discard if discard.count() else dialog.first.locator("button.jp-mod-accept")).first.click()
        elif page.locator(".jp-NotebookPanel").count() == 0:
            return
        page.wait_for_timeout(100)
    raise AssertionError("notebook tabs did not close")


def menu(page, top: str, command: str) -> None:
    """Click a main-menu entry, e.g. ``menu(page, "Run", "runmenu:run-all")``."""
    page.click(f"li.lm-MenuBar-item:has-text('{top}')")
    page.click(f".lm-Menu-item[data-command='{command}']")


def run_all(page, timeout_s: float = 150.0) -> float:
    """Run > Run All Cells, wait until nothing is queued and the kernel is idle; returns seconds."""
    start = time.monotonic()
    menu(page, "Run", "runmenu:run-all")
    page.wait_for_timeout(300)
    deadline = start + timeout_s
    settled_since = None
    while time.monotonic() < deadline:                 # idle for 0.6 s: really settled
        if page.locator(".jp-Dialog").count():
            raise AssertionError(f"dialog while running: {page.locator('.jp-Dialog').first.inner_text()!r}")
        if page.evaluate(_SETTLED_JS):
            settled_since = settled_since or time.monotonic()
            if time.monotonic() - settled_since >= 0.6:
                return time.monotonic() - start
        else:
            settled_since = None
        page.wait_for_timeout(250)
    raise AssertionError(f"cells still running after {timeout_s:.0f} s: {page.evaluate(_PROMPTS_JS)}")


def unexecuted_cells(page) -> List[str]:
    """Code cells with source whose prompt shows no execution count (aborted or skipped)."""
    return [src for prompt, src in page.evaluate(_PROMPTS_JS)
            if src and not re.search(r"\[\d+\]", prompt)]


def error_outputs(page) -> List[str]:
    """Texts of stderr / traceback outputs and widget render failures (tqdm bars excepted)."""
    texts = [t for t in page.locator(STDERR).all_inner_texts()
             if not all(PROGRESS_BAR.match(line) for line in t.strip().splitlines() if line.strip())]
    broken = page.locator(".jp-OutputArea-output:has-text('Error displaying widget')").all_inner_texts()
    return texts + broken


def save(page) -> None:
    """File > Save Notebook, then wait until the tab is no longer marked dirty."""
    menu(page, "File", "docmanager:save")
    page.wait_for_selector(".jp-NotebookPanel-toolbar", timeout=10_000)
    page.wait_for_function("() => !document.querySelector('.lm-TabBar-tab.jp-mod-current.jp-mod-dirty')",
                           timeout=20_000)


def image_src(locator) -> str:
    """``src`` of the (single) image inside ``locator``, '' when there is none yet."""
    img = locator.locator("img")
    return img.first.get_attribute("src") if img.count() else ""


def wait_for_new_image(locator, old: str, timeout_s: float = 30.0) -> str:
    """Poll until the image inside ``locator`` has a ``src`` different from ``old``.

    The Output widget replaces its <img> element on every update, so we re-query each time.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        src = image_src(locator)
        if src and src != old:
            return src
        time.sleep(0.2)
    raise AssertionError(f"figure did not change within {timeout_s:.0f} s")
