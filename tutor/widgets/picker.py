"""Global token positions, clicked in a list or typed as text ("0, 17", "0-3", "all")."""
from __future__ import annotations

import html
import re
from typing import Sequence, Tuple

import ipywidgets as widgets
import traitlets


def parse_positions(text: str, T: int) -> Tuple[int, ...]:
    """Token positions typed as ``"0, 17"``, ranges ``"0-3"``, ``"all"`` or ``""`` -> sorted tuple."""
    if not isinstance(text, str):
        raise TypeError(f"positions must be a str like '0, 17', got {type(text).__name__}")
    if text.strip().lower() == "all":
        return tuple(range(T))
    found = set()
    for part in filter(None, re.split(r"[,\s]+", text.strip())):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None:
            raise ValueError(f"positions: {part!r} is not a position or a range a-b (text {text!r})")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if hi >= T or lo > hi:
            raise ValueError(f"positions: {part!r} is outside 0..{T - 1} (T={T})")
        found.update(range(lo, hi + 1))
    return tuple(sorted(found))


def format_positions(positions: Sequence[int]) -> str:
    return ", ".join(map(str, positions))


class GlobalTokenPicker(widgets.HBox):
    """Global token positions, clicked (``select``, a SelectMultiple) or typed (``text``: "0, 17").

    The two stay in sync; ``positions`` (a sorted tuple, observable) is the current choice.
    Typing something invalid shows the reason in ``message`` and keeps the previous choice.
    """
    positions = traitlets.Tuple()

    def __init__(self, T: int, positions: Sequence[int] = (0,)):
        self.T, self._syncing = T, False
        self.select = widgets.SelectMultiple(options=[(str(i), i) for i in range(T)], rows=5,
                                             description="global", layout={"width": "150px"})
        self.text = widgets.Text(placeholder="0, 17 | 0-3 | all", continuous_update=False,
                                 description="typed", layout={"width": "230px"})
        self.message = widgets.HTML()
        super().__init__([self.select, widgets.VBox([self.text, self.message])])
        self._set(parse_positions(format_positions(positions), T))
        self.select.observe(self._from_select, "value")
        self.text.observe(self._from_text, "value")

    def _set(self, positions) -> None:
        self._syncing = True
        try:
            self.select.value, self.text.value, self.message.value = positions, format_positions(positions), ""
        finally:
            self._syncing = False
        self.positions = tuple(positions)

    def _from_select(self, change) -> None:
        if not self._syncing:
            self._set(tuple(sorted(change["new"])))

    def _from_text(self, change) -> None:
        if self._syncing:
            return
        try:
            self._set(parse_positions(change["new"], self.T))
        except ValueError as err:
            self.message.value = f"<span style='color:#c53030'>{html.escape(str(err))}</span>"

    def set_length(self, T: int) -> None:
        """New sequence length: positions >= T are dropped."""
        kept = tuple(p for p in self.positions if p < T)
        self.T, self._syncing = T, True
        try:
            self.select.options = [(str(i), i) for i in range(T)]
        finally:
            self._syncing = False
        self._set(kept)
