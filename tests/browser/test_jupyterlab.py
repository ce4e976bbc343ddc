"""Every course notebook, and a generated notebook with the three explorers, in a real JupyterLab.

For each notebook: open it, Run > Run All Cells, wait for the kernel to settle, then check that
no cell printed a traceback or stderr, every code cell ran, the saved file holds no error
output, widgets rendered, and that driving each explorer (arrow key on its first slider, typing
into its text box) really redraws its figure. Screenshots land in tests/browser/screenshots/.
Set TUTOR_BROWSER_NOTEBOOKS to a glob to open only some course notebooks.
"""
import os
import time
from pathlib import Path

import nbformat
import pytest
from labpage import (GENERATED, error_outputs, image_src, open_notebook, run_all, save,
                     unexecuted_cells, wait_for_new_image)

ROOT = Path(__file__).resolve().parents[2]
#: which course notebooks to open (a glob); e.g. TUTOR_BROWSER_NOTEBOOKS="0[0-3]_*.ipynb"
PATTERN = os.environ.get("TUTOR_BROWSER_NOTEBOOKS", "*.ipynb")
NOTEBOOKS = [GENERATED] + sorted(p.name for p in (ROOT / "notebooks").glob(PATTERN))


def drive_explorer(explorer, shot: Path) -> None:
    """Arrow-key the first slider, then type into the first text box: the figure must change."""
    figure = explorer.locator(".tutor-explorer-figure")
    figure.scroll_into_view_if_needed()
    before = image_src(figure)
    assert before.startswith("data:image/png"), f"no figure rendered: src={before[:40]!r}"
    explorer.screenshot(path=f"{shot}-before.png")

    handle = explorer.locator(".widget-slider .noUi-handle").first
    old_value = handle.get_attribute("aria-valuenow")
    handle.focus()
    handle.press("ArrowRight")
    after_slider = wait_for_new_image(figure, before)
    assert handle.get_attribute("aria-valuenow") != old_value

    text = explorer.locator(".widget-text input[type='text']")
    if text.count():
        text.first.fill("1, 3")
        text.first.press("Enter")
        wait_for_new_image(figure, after_slider)
    explorer.screenshot(path=f"{shot}-after.png")


@pytest.mark.browser
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_clean_in_jupyterlab(lab, page, screenshots, name):
    stem, start = Path(name).stem, time.monotonic()
    open_notebook(page, lab, f"notebooks/{name}")
    opened = time.monotonic() - start
    seconds = run_all(page)
    page.screenshot(path=screenshots / f"{stem}.png")

    assert error_outputs(page) == []
    assert unexecuted_cells(page) == [], "cells that never ran (an earlier cell failed?)"
    save(page)
    saved = nbformat.read(lab.root / "notebooks" / name, as_version=4)
    code = [c for c in saved.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == [], [f"{o.get('ename')}: {o.get('evalue')}" for o in errors]

    if any("widget" in c.source or "explorer" in c.source for c in code):
        assert page.locator(".jupyter-widgets").count() > 0, "widget cells ran but nothing rendered"
    explorers = page.locator(".tutor-explorer")
    if name == GENERATED:
        assert explorers.count() == 3
        assert page.locator(".widget-slider").count() >= 10
    checked = time.monotonic() - start
    for k in range(explorers.count()):
        drive_explorer(explorers.nth(k), screenshots / f"{stem}-explorer{k}")
    print(f"\n{name}: opened {opened:.1f} s, cells ran {seconds:.1f} s, checked at {checked:.1f} s, "
          f"{explorers.count()} explorers driven, done at {time.monotonic() - start:.1f} s")
