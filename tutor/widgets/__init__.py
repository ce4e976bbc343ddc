"""Interactive explorers for the notebooks (ipywidgets 8 / JupyterLab 4): widget glue only.

    from tutor.widgets import pattern_explorer; pattern_explorer()
    from tutor.widgets import attention_explorer; attention_explorer()
    from tutor.widgets import cost_explorer; cost_explorer()

Each call returns a ``VBox`` whose controls are public attributes (``ex.window.value = 5``
redraws), and whose last results are kept for tests and curious learners (``ex.mask``,
``ex.weights``, ``ex.figure``, ...). Figures come from :mod:`tutor.viz`; each is rendered once to
PNG into ``ex.out`` (a ``widgets.Output``) and then closed, so nothing leaks. Displayed, an
explorer also carries that PNG as a plain image: a notebook run headless (nbclient, nbval) or
exported to static HTML shows the explorer's initial figure where no widget can be drawn.

* :mod:`.base`      - rendering a figure into an Output, the shared explorer glue, the static image.
* :mod:`.picker`    - global token positions, clicked or typed.
* :mod:`.pattern`   - the pattern explorer (notebook 00).
* :mod:`.attention` - the attention explorer (notebooks 01, 02).
* :mod:`.cost`      - the cost explorer (notebooks 03, 04).
"""
from .attention import AttentionExplorer, attention_explorer, toy_attention_weights
from .base import Explorer, figure_png, show_figure
from .cost import CostExplorer, cost_explorer
from .pattern import PatternExplorer, pattern_explorer
from .picker import GlobalTokenPicker, parse_positions

__all__ = ["pattern_explorer", "attention_explorer", "cost_explorer", "PatternExplorer", "AttentionExplorer",
           "CostExplorer", "GlobalTokenPicker", "Explorer", "show_figure", "figure_png", "parse_positions",
           "toy_attention_weights"]
