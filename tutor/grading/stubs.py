"""Stubs for a graded notebook's kernel: the course's own functions refuse to do the learner's work.

:func:`install` swaps the code of each function object for a small gate, so every way of reaching
it goes through the gate: an import under another name, a dict of backends, a call from a thread,
a clone of its code object, a profiler switched off. The gate always refuses a question's
reference; a function that some question forbids (``_forbidden``, ``_no_attention``) is refused
too, except while the grader calls the answer of a question that may use it (:func:`allowing`).
The originals stay reachable inside this module: digging them out is reverse-engineering the
grader, which the threat model of :mod:`tutor.grading` leaves to academic honesty.
"""
from __future__ import annotations

import contextlib
import types
from typing import Callable, Dict, FrozenSet, Iterable, Iterator, Optional, Tuple


class WriteItYourself(RuntimeError):
    """Raised when an answer calls a function that already does what the exercise asks."""


_TABLE: Dict[int, Tuple[str, Callable, bool]] = {}     # key -> (dotted name, original, is a reference)
_KEYS: Dict[int, int] = {}                             # id(stubbed function) -> key
_ALLOWED: Optional[FrozenSet[int]] = None              # keys usable now; None outside an answer call


def _gate(key: int, args: tuple, kwargs: dict):
    name, original, reference = _TABLE[key]
    if reference or _ALLOWED is None or key not in _ALLOWED:
        what = "is the course's reference answer" if reference else "already does what this exercise asks"
        raise WriteItYourself(f"`{name}` {what}, so it is switched off while grading: write this yourself.")
    return original(*args, **kwargs)


def _original(fn: types.FunctionType) -> types.FunctionType:
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__dict__.update(fn.__dict__)
    return copy


def install(functions: Iterable[Tuple[Callable, bool]]) -> int:
    """Gate each ``(function, is_reference)``; returns how many were gated (closures are skipped)."""
    count = 0
    for fn, reference in functions:
        fn = getattr(fn, "__wrapped__", fn)
        if not isinstance(fn, types.FunctionType) or id(fn) in _KEYS or fn.__closure__:
            if id(fn) in _KEYS and reference:            # a function both forbidden and a reference
                name, original, _ = _TABLE[_KEYS[id(fn)]]
                _TABLE[_KEYS[id(fn)]] = (name, original, True)
            continue
        key = len(_TABLE)
        name = f"{fn.__module__}.{fn.__qualname__}"
        source = f"def {fn.__name__}(*args, **kwargs):\n    return __tutor_gate__({key}, args, kwargs)\n"
        namespace: dict = {}
        exec(compile(source, f"<switched off while grading: {name}>", "exec"), namespace)
        _TABLE[key] = (name, _original(fn), bool(reference))
        fn.__globals__["__tutor_gate__"] = _gate
        fn.__code__ = namespace[fn.__name__].__code__
        _KEYS[id(fn)] = key
        count += 1
    return count


def key_of(fn: Callable) -> Optional[int]:
    """The gate key of a stubbed function, or None."""
    return _KEYS.get(id(getattr(fn, "__wrapped__", fn)))


@contextlib.contextmanager
def allowing(functions_refused: Iterable[Callable]) -> Iterator[None]:
    """Inside: every gated function except ``functions_refused`` (and references) runs normally."""
    global _ALLOWED
    refused = {key_of(fn) for fn in functions_refused}
    previous, _ALLOWED = _ALLOWED, frozenset(k for k in _TABLE if k not in refused)
    try:
        yield
    finally:
        _ALLOWED = previous
