"""The graded notebook's side of grading: runs inside the sandboxed kernel, never in the grader.

The grader runs :func:`install` before the first cell: the course's references and forbidden
functions become stubs (:mod:`tutor.grading.stubs`), values and solutions of the questions are
withheld, and ``check()`` only remembers what the learner checked. After the last cell the grader
asks :func:`describe` what was checked and :func:`call`\\ s each answer on inputs it sends; what
comes back is plain data (``torch.save``), judged in the grader's process. Nothing here decides a
verdict, so nothing the learner changes here can forge one.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Dict, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .. import exercises
from ..exercises.feedback import Result, is_blank
from ..exercises.footprint import largest_storage
from ..exercises.loops import lines_run
from ..exercises.problem import record_checks_with
from ..exercises.registry import question, questions
from ..exercises.sandbox import TimeLimitExceeded, call_with_limit, pinned_torch
from . import stubs

WITHHELD = "(withheld while grading)"
_ANSWERS: Dict[str, Any] = {}


def _record(q, answer) -> Result:
    _ANSWERS[q.id] = answer
    print(f"{q.id}: recorded; the grader checks it outside this notebook.")
    return Result(q.id, "not_attempted", "recorded for grading")


def install() -> int:
    """Gate the course's functions, withhold values and solutions, make ``check()`` record only."""
    gated = []
    for q in questions():
        for fn in q.watched():      # a question module's own reference is refused always
            own = getattr(fn, "__module__", "").startswith(exercises.__name__ + ".")
            gated.append((fn, own and fn is getattr(q, "reference", None)))
    count = stubs.install(gated)
    for q in questions():
        q.withhold(WITHHELD)
    record_checks_with(_record)
    return count


def _plain(x) -> bool:
    buffer = io.BytesIO()
    try:
        torch.save(x, buffer)
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    except Exception:
        return False
    return True


def describe(qid: str, out: str) -> None:
    """Write what the learner last checked for ``qid``: none | blank | callable | value | opaque."""
    if qid not in _ANSWERS:
        info = {"kind": "none"}
    else:
        answer = _ANSWERS[qid]
        if is_blank(answer):
            info = {"kind": "blank"}
        elif callable(answer):
            info = {"kind": "callable"}
        elif _plain(answer):
            info = {"kind": "value", "value": answer}
        else:
            info = {"kind": "opaque", "type": type(answer).__name__}
    torch.save(info, out)


def _error(exc: BaseException):
    kind = ("timeout" if isinstance(exc, TimeLimitExceeded) else
            "not_implemented" if isinstance(exc, NotImplementedError) else "raised")
    return (kind, type(exc).__name__, str(exc)[:500])


class NoAutograd(TorchDispatchMode):
    """While an answer to a backward question runs: every operator that autograd would run is refused,
    whatever route reaches it (``torch.autograd.*``, ``Tensor.backward``, ``torch.func``, a
    ``grad_fn`` called by hand, an aten ``*_backward`` op): an op on a tensor that requires grad or
    has a ``grad_fn``, an op run by the autograd engine, an op whose name says backward."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if ("backward" in name or torch._C._current_autograd_node() is not None
                or any(isinstance(t, torch.Tensor) and (t.requires_grad or t.grad_fn is not None)
                       for t in tree_leaves((args, kwargs)))):
            raise stubs.WriteItYourself(f"autograd (`{name}`) computes this gradient for you, so it is switched "
                                        f"off while grading: write the backward pass yourself.")
        return func(*args, **kwargs)


def forbids_autograd(q) -> bool:
    """Does question ``q`` forbid autograd (its watched functions include ``torch.autograd``'s)?"""
    return any(getattr(fn, "__module__", "").startswith("torch.autograd") for fn in q.watched())


@contextlib.contextmanager
def _no_autograd(on: bool):
    if not on:
        yield
        return
    with torch.no_grad(), NoAutograd():
        yield


#: probes the grader may ask for (:func:`tutor.exercises.sandbox.probe_with_limit`): name -> probe(fn, args)
PROBES = {"largest_storage": largest_storage, "lines_run": lines_run}


def call(qid: str, inp: str, out: str, seconds: float, probe: Optional[str] = None) -> None:
    """Call the answer of ``qid`` on the arguments in ``inp``; write value, error and arguments after.

    With ``probe`` the value written is what that probe of :data:`PROBES` saw of the call (an int).
    """
    args = torch.load(inp, weights_only=True)
    q = question(qid)
    fn, call_args = ((_ANSWERS[qid], tuple(args)) if probe is None else
                     (PROBES[probe], (_ANSWERS[qid], tuple(args))))
    try:
        with stubs.allowing(q.watched()), pinned_torch(), _no_autograd(forbids_autograd(q)):
            value, error = call_with_limit(fn, call_args, seconds)
    except BaseException as exc:      # the learner's code ended the call some other way
        value, error = None, exc
    payload = {"value": None if error is not None else value, "after": args,
               "error": None if error is None else _error(error)}
    try:
        torch.save(payload, out)
    except Exception:
        torch.save({"value": None, "after": args,
                    "error": ("unsupported", type(value).__name__, "cannot be sent back as plain data")}, out)
