"""Feedback: the placeholder ``____``, the :class:`Result` of a check and how it is shown.

In a notebook the feedback is Markdown (a coloured word, the question id, the message); anywhere
else it is printed. ``check()`` displays its result itself, so the result it returns does not
show a second time when it is the last expression of the same cell.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

STATUSES = ("correct", "incorrect", "not_attempted")
_COLORS = {"correct": "#2e7d32", "incorrect": "#c62828", "not_attempted": "#1565c0"}
_WORDS = {"correct": "Correct", "incorrect": "Incorrect", "not_attempted": "Not attempted"}


class _Blank:
    """The placeholder a learner replaces: ``answer = ____``."""

    def __repr__(self) -> str:
        return "____"


____ = _Blank()


def is_blank(answer) -> bool:
    """True for an untouched placeholder: ``None``, ``____`` or ``...``."""
    return answer is None or answer is ____ or answer is Ellipsis


def _in_kernel() -> Optional[Any]:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return shell if shell is not None and hasattr(shell, "kernel") else None


def show(markdown: str, plain: str) -> None:
    """Display Markdown in a notebook, print plain text elsewhere."""
    if _in_kernel() is not None:
        from IPython.display import display
        display({"text/markdown": markdown, "text/plain": plain}, raw=True)
    else:
        print(plain)


@dataclass
class Result:
    """What ``check`` found: ``status`` in STATUSES and a ``message`` for the learner."""
    question: str
    status: str
    message: str

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    def plain(self) -> str:
        return f"{self.question} {_WORDS[self.status]}: {self.message}"

    def markdown(self) -> str:
        return (f'<span style="color:{_COLORS[self.status]}">**{_WORDS[self.status]}**</span> '
                f"({self.question}): {self.message}")

    def display(self) -> None:
        shell = _in_kernel()
        self._shown_at = getattr(shell, "execution_count", None)
        show(self.markdown(), self.plain())

    def _ipython_display_(self) -> None:
        # check() already displayed this result in the same cell: do not show it twice
        shell = _in_kernel()
        if getattr(self, "_shown_at", None) is not None and self._shown_at == getattr(shell, "execution_count", -1):
            return
        self.display()

    def __repr__(self) -> str:
        return f"<Result {self.question} {self.status}: {self.message}>"
