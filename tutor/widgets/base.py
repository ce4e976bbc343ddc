"""Shared glue: a figure rendered into an ``Output``, redraw on any control, a static image when displayed."""
from __future__ import annotations

import base64
import io
from typing import Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

SLIDER = dict(continuous_update=False, style={"description_width": "90px"})


def figure_png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes; closes it, so nothing leaks."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def show_figure(out: widgets.Output, fig: Figure) -> bytes:
    """Replace the content of ``out`` by ``fig`` as a PNG (returned), then close ``fig``."""
    png = figure_png(fig)
    w, h = (fig.get_size_inches() * fig.dpi).astype(int)
    out.outputs = ({"output_type": "display_data", "metadata": {},
                    "data": {"image/png": base64.b64encode(png).decode("ascii"),
                             "text/plain": f"<Figure size {w}x{h}>"}},)
    return png


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A small HTML table (cells are our own numbers, no escaping needed)."""
    cells = lambda tag, row: "".join(f"<{tag}>{c}</{tag}>" for c in row)  # noqa: E731
    return "<table><tr>" + cells("th", header) + "</tr>" + "".join(
        f"<tr>{cells('td', r)}</tr>" for r in rows) + "</table>"


class Explorer(widgets.VBox):
    """Base of the explorers: ``out`` (an Output) holds the figure, any control change redraws.

    Subclasses build their controls and ``out``, call :meth:`_wire` with the controls, and
    implement :meth:`update`, which ends with :meth:`_show` of the new figure.
    """

    def _wire(self, *controls) -> None:
        from .picker import GlobalTokenPicker
        self._muted = False
        self.add_class("tutor-explorer")                 # stable hooks for the browser tests
        self.out.add_class("tutor-explorer-figure")
        for c in controls:
            c.observe(self._changed, "positions" if isinstance(c, GlobalTokenPicker) else "value")
        self.update()

    def _changed(self, change) -> None:
        if not self._muted:
            self.update()

    def _show(self, fig: Figure) -> None:
        self.figure = fig
        self.png = show_figure(self.out, fig)

    def update(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        """The widget view, and the current figure as a plain ``image/png`` beside it.

        A live JupyterLab draws the widget (its renderer ranks first); where no widget can be
        drawn (a notebook run by nbclient or nbval and then rendered, an HTML export without
        widget state, GitHub) the frontend falls back to the image: the explorer's state when
        the cell ran.
        """
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data["image/png"] = base64.b64encode(self.png).decode("ascii")
        return bundle
