"""Does an answer loop over T in Python? Count the lines its own code runs at two sequence lengths.

A vectorized answer runs the same lines whatever T is; a Python loop over the queries (or over
the window slots of each query) runs more of them when T doubles. Lines are counted with
``sys.settrace`` in the learner's code only: frames of torch, of ``tutor`` and of the standard
library are not traced, so a torch call counts as the one line that makes it. This checks
behaviour, not source text: any loop, comprehension or recursion over T shows up.
"""
from __future__ import annotations

import os
import sys
import sysconfig
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from .sandbox import probe_with_limit

_NOT_LEARNER = tuple(os.path.dirname(p) + os.sep for p in (torch.__file__, os.path.dirname(__file__)))
_NOT_LEARNER += tuple(sysconfig.get_paths()[k] + os.sep for k in ("stdlib", "platstdlib"))


def _learner_frame(frame) -> bool:
    return not frame.f_code.co_filename.startswith(_NOT_LEARNER)


def lines_run(fn: Callable, args: tuple) -> int:
    """How many line events ``fn(*args)`` produces in the learner's own code (this thread only)."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def trace(frame, event, arg):
        return local if _learner_frame(frame) else None

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        fn(*args)
    finally:
        sys.settrace(previous)
    return count


def loop_over_T(fn: Callable, arguments: Callable[[int], tuple], sizes: Sequence[int] = (16, 32),
                seconds: float = 5.0) -> Tuple[Optional[str], List[int]]:
    """``(problem, counts)``: problem is None when ``fn`` runs as many of its own lines at every T of
    ``sizes``, else a message for the learner; counts are the lines run at each size.

    ``arguments(T)`` builds the call's arguments for sequence length T. All counts 0 means no
    learner code ran in this process (e.g. a stand-in that calls the function elsewhere): nothing
    could be checked, and the caller must not claim it was.
    """
    counts = []
    for T in sizes:
        value, error = probe_with_limit(lines_run, fn, arguments(T), seconds)
        if error is not None:
            return f"on case 'loop probe' (T={T}) your function raised {type(error).__name__}: {error}", counts
        counts.append(value)
    if counts[-1] > counts[0]:
        return (f"on case 'loop probe' (T={sizes[0]} and T={sizes[-1]}) your code runs {counts[0]} and "
                f"{counts[-1]} of its own Python lines: "
                f"it loops over the sequence in Python. The question asks for no Python loop over T; "
                f"let one tensor operation handle every query at once (`.hint()` shows which).", counts)
    return None, counts
