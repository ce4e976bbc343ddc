"""The problem base: one small data-driven class per question, in the learntools spirit.

A question class sets data (``id``, ``title``, ``_reference``, ``_cases``, ``_compare``,
``_hints``, ``_solution``, ``_forbidden``); the base turns it into ``check``, ``hint``,
``solution`` and ``reference``. A function question's stub is its solution's header and a
``raise`` (:func:`stub_of`), and the case values it passes are the reference's parameters, unless
the class sets ``_stub`` or ``_args`` itself. ``check`` never raises: every failure of the learner's
code comes back as a :class:`Result` whose status is ``"incorrect"`` and whose message names the
input case and what differs, never the expected value.

``check`` is the learner's instant feedback. Cases and references are built under
:func:`~tutor.exercises.sandbox.pinned_torch`, so an earlier answer that changed torch's defaults
cannot skew them, and nothing but ``KeyboardInterrupt`` escapes it. The course's own functions
(the reference, the ``_forbidden`` ones) are refused as answers; the checkers' tests pass the
reference with ``_check_trusted``. ``_check`` is the hook a question overrides (calling
``super()._check``): the grader runs the very same ``_check`` in its own process, through
:meth:`Problem.judge`, with an answer that calls the learner's function in the sandboxed notebook
(:mod:`tutor.grading.verdicts`). Inside that notebook's kernel the grader makes ``check`` only
record the answer (:func:`record_checks_with`) and withholds solutions and values
(:meth:`Problem.withhold`); :meth:`Problem.watched` names the functions an answer must not call.
"""
from __future__ import annotations

import importlib
import inspect
import re
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch

from . import progress
from .compare import compare_attention, compare_number
from .feedback import Result, is_blank, show
from .sandbox import CallWatcher, TimeLimitExceeded, call_with_limit, code_of, pinned_torch, time_limit

#: seconds one call may take; None reads TUTOR_CHECK_TIME_LIMIT when a check runs (default 5)
TIME_LIMIT: Optional[float] = None

#: the line a function question's stub has in place of the solution's body
PLACEHOLDER = "    raise NotImplementedError  # replace with your code\n"

#: a solution's header: any lines before its ``def``, the ``def`` line and the function's docstring
_HEADER = re.compile(r'.*?^def [^\n]*:\n    """.*?"""\n', re.S | re.M)

#: set in a graded notebook's kernel (:func:`record_checks_with`): ``check`` only records the answer
_RECORDER: Optional[Callable] = None


def record_checks_with(recorder: Optional[Callable]) -> None:
    """From now on ``check(answer)`` returns ``recorder(question, answer)`` and judges nothing
    (the grader's kernel side, :mod:`tutor.grading.child`); ``None`` turns checking back on."""
    global _RECORDER
    _RECORDER = recorder


def _resolve(dotted: str) -> Optional[Callable]:
    """The function named ``dotted``, or None if it no longer exists (then nobody can call it)."""
    module, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _clone(x):
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(v) for v in x)
    return x


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def required_parameters(fn: Callable) -> Tuple[str, ...]:
    """The names of ``fn``'s parameters that have no default, in order: ``("T", "window")``."""
    return tuple(name for name, p in inspect.signature(fn).parameters.items() if p.default is p.empty)


def stub_of(solution: str) -> str:
    """The stub of a function question: ``solution`` up to the end of its docstring, then ``PLACEHOLDER``."""
    header = _HEADER.match(solution)
    if header is None:
        raise ValueError(f"solution must define a function with a docstring, got {solution[:80]!r}")
    return header[0] + PLACEHOLDER


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 240 else text[:237] + "..."


class Problem:
    """Base of every question: ``check``, ``hint``, ``solution`` and ``reference`` from data."""
    id: str = ""
    title: str = ""
    _name: str = ""             # the learner's function or variable in the notebook
    _prompt: str = ""           # Markdown shown above the question in the notebook
    _stub: str = ""             # the placeholder code the learner replaces
    _solution: str = ""         # a solved version of ``_stub``
    _hints: Sequence[str] = ()
    _congrats: str = ""

    def __repr__(self) -> str:
        return f"<Question {self.id}: {self.title}>"

    # what the exercise and solution notebooks show (:mod:`tutor.exercises.authoring` writes them)
    answer_name = property(lambda self: self._name,
                           doc="The learner's function or variable in the notebook: what the check cell passes to ``check``.")
    prompt = property(lambda self: self._prompt, doc="The Markdown shown above the question.")
    stub = property(lambda self: self._stub,
                    doc="The placeholder code the learner replaces (the exercise notebook's answer cell).")
    solution_code = property(lambda self: self._solution,
                             doc="A solved version of :attr:`stub` (the solution notebook's answer cell); "
                                 "``solution()`` shows it.")

    @property
    def reference(self):
        raise NotImplementedError

    def _check(self, answer) -> Result:
        raise NotImplementedError

    def _result(self, status: str, message: str) -> Result:
        return Result(self.id, status, message)

    def _refused(self, answer) -> Optional[str]:
        """A reason to refuse ``answer`` before running it (FunctionProblem: the course's own code)."""
        return None

    def watched(self) -> list:
        """The course's functions an answer must not call (FunctionProblem: the reference and the
        forbidden ones); none for a value question."""
        return []

    def withhold(self, text: str) -> None:
        """Replace this question's solution (and a value question's value) by ``text``, for every
        instance: the grader does it in a graded notebook's kernel, where no answer may be read."""
        cls = type(self)
        cls._solution = text
        if hasattr(cls, "_value"):
            cls._value = text

    def judge(self, answer) -> Result:
        """The verdict on ``answer``: ``_check`` under pinned torch defaults, a failure of the checker
        itself a Result too; records and shows nothing (the grader calls it in its own process)."""
        try:
            with pinned_torch():
                return self._check(answer)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:      # a checker bug or an answer's BaseException stays inside check()
            return self._result("incorrect", f"the checker could not judge this answer ({_short(exc)}).")

    def check(self, answer) -> Result:
        """Check ``answer``; displays kind, specific feedback and returns the :class:`Result`."""
        if _RECORDER is not None:         # a graded run: the grader judges, outside this process
            return _RECORDER(self, answer)
        refused = self._refused(answer)
        result = self._result("incorrect", refused) if refused else self.judge(answer)
        progress.record(result)
        result.display()
        return result

    def _check_trusted(self, answer) -> Result:
        """For the checkers' own tests: judge ``answer`` (the reference too), record and show nothing."""
        self._trusted = True
        try:
            return self.judge(answer)
        finally:
            self._trusted = False

    def hint(self, n: int = 1) -> None:
        """Show hint ``n`` (1 = gentlest); the last one is close to the answer."""
        if not self._hints:
            show("No hint for this one.", "No hint for this one.")
            return
        n = max(1, min(int(n), len(self._hints)))
        more = f" (more: `hint({n + 1})`)" if n < len(self._hints) else ""
        text = f"Hint {n}/{len(self._hints)}{more}: {self._hints[n - 1]}"
        show(text, text)

    def solution(self) -> None:
        """Show a solution. Try the hints first!"""
        show(f"Solution for {self.id}:\n```python\n{self._solution.strip()}\n```",
             f"Solution for {self.id}:\n{self._solution.strip()}")


class FunctionProblem(Problem):
    """The learner writes a function; it is called on ``_cases`` and compared with ``_reference``."""
    _reference: Callable = None
    _cases: Sequence = ()
    _args: Sequence[str] = ()          # the case values passed, in order; () = the reference's parameters
    _compare: Callable = None
    _forbidden: Sequence[str] = ()     # dotted names of functions the answer must not call
    _no_attention: bool = False        # also forbid every full attention implementation of tutor

    @property
    def reference(self) -> Callable:
        return type(self)._reference

    @property
    def _stub(self) -> str:
        """The solution's header (imports, ``def`` line, docstring) and ``PLACEHOLDER``, unless a class sets its own."""
        return stub_of(self._solution)

    def _refused(self, answer) -> Optional[str]:
        code = code_of(answer) if callable(answer) else None
        for fn in self.watched():
            if answer is fn or (code is not None and code is code_of(fn)):
                return (f"this is the course's own `{fn.__module__}.{fn.__qualname__}`, not your function. "
                        f"Write `{self._name or 'your function'}` yourself and check that.")
        return None

    def watched(self) -> list:
        """The reference and every forbidden function: calling one of them is not doing the work."""
        watched = [self.reference, *map(_resolve, self._forbidden)]
        if self._no_attention:
            from ..attention import IMPLS, BACKENDS
            watched += [*IMPLS.values(), *(backend.fn for backend in BACKENDS.values())]
            watched.append(_resolve("tutor.attention.sparse.sparse_attention"))
        return [fn for fn in watched if fn is not None]

    def _arguments(self, case) -> Dict[str, Any]:
        values = case.tensors()
        return {name: values[name] for name in self._args or required_parameters(self.reference)}

    def _check(self, fn) -> Result:
        if is_blank(fn):
            return self._result("not_attempted", "replace the placeholder with your function, then check it.")
        if not callable(fn):
            return self._result("incorrect", f"check() wants your function itself, e.g. `check(my_fn)` "
                                             f"without parentheses; you gave a {type(fn).__name__}.")
        watcher = CallWatcher([] if getattr(self, "_trusted", False) else self.watched())
        limit = TIME_LIMIT or time_limit()
        for n, case in enumerate(self._cases):
            with pinned_torch():          # an earlier call may have changed torch's defaults
                args = self._arguments(case)
                expected = self.reference(*_clone(list(args.values())))
                given = _clone(list(args.values()))
            value, error = call_with_limit(fn, tuple(given), limit, watcher)
            if watcher.called:
                return self._result("incorrect", (
                    f"your function calls `{watcher.called[0]}`, which already does what this exercise "
                    f"asks you to write, so the check cannot see your own work. You can do it: build it "
                    f"from smaller pieces (`.hint()` shows which)."))
            if isinstance(error, NotImplementedError) and n == 0:
                return self._result("not_attempted", "your function still raises NotImplementedError: "
                                                     "replace that line with your code.")
            if isinstance(error, TimeLimitExceeded):
                return self._result("incorrect", f"on case {case.label} your function did not finish within "
                                                 f"{limit:g} s and was stopped. Is there a loop that never ends?")
            if error is not None:
                return self._result("incorrect", f"on case {case.label} your function raised {_short(error)}")
            if value is None:
                if n == 0:
                    return self._result("not_attempted", "your function returned None. If you have written "
                                                         "code, check that it ends with `return`.")
                return self._result("incorrect", f"on case {case.label} your function returned None.")
            for name, before, after in zip(args, args.values(), given):
                if not _same(before, after):
                    return self._result("incorrect", (
                        f"on case {case.label} your function changed its argument `{name}` in place. "
                        f"Leave inputs untouched: work on a copy or use out-of-place operations."))
            with pinned_torch():
                problem = type(self)._compare(value, expected, case)
            if problem:
                return self._result("incorrect", f"on case {case.label}, {problem}")
        return self._result("correct", f"all {len(self._cases)} cases pass. {self._congrats}".strip())


class AttentionProblem(FunctionProblem):
    """The learner writes attention itself: compared as attention, and no attention of tutor may do the work."""
    _compare: Callable = staticmethod(compare_attention)
    _no_attention = True


class ValueProblem(Problem):
    """The learner gives a value; ``_mistakes`` maps known wrong values to a targeted word."""
    _value: Any = None
    _compare: Callable = staticmethod(compare_number)
    _mistakes: Dict[float, str] = {}

    @property
    def reference(self):
        return self._value

    def _check(self, answer) -> Result:
        if is_blank(answer):
            return self._result("not_attempted", "replace `____` with your answer, then check it.")
        if callable(answer):
            return self._result("incorrect", "this question wants a value, not a function.")
        for wrong, word in self._mistakes.items():
            if compare_number(answer, wrong, None) is None:
                return self._result("incorrect", f"{answer!r} is not right: {word}")
        problem = type(self)._compare(answer, self._value, None)
        if problem:
            return self._result("incorrect", problem)
        return self._result("correct", f"{answer!r} is right. {self._congrats}".strip())
