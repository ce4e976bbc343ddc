"""Calling a learner's function safely: a time limit, and a watch for forbidden calls.

:func:`call_with_limit` runs ``fn(*args)`` and returns ``(value, error)`` instead of raising, so a
checker never takes the kernel down. A Python-level hang is interrupted after ``seconds``:

* in the main thread on POSIX (a Jupyter kernel runs cells there) with ``signal.setitimer`` and a
  ``SIGALRM`` handler that raises :class:`TimeLimitExceeded` inside the running loop;
* elsewhere (a worker thread, Windows) in a daemon thread that is joined with a timeout and then
  stopped with ``PyThreadState_SetAsyncExc`` (works for Python loops; a C call finishes first).

:class:`CallWatcher` notes, through ``sys.setprofile``, whether any of a set of functions ran
during the call: it identifies them by code object, so every alias of a reference is caught
(``from tutor.attention import unfold_attention``, ``sparse_attention(impl="unfold")``, ...).

:func:`pinned_torch` builds cases and references under float32 on the CPU whatever an earlier answer
did to torch's defaults (``set_default_device``, ``set_default_dtype``, grad mode), and puts the
caller's defaults back afterwards. A learner's code that ignores ``SIGALRM`` is still stopped: a
watchdog thread raises :class:`TimeLimitExceeded` in the main thread a moment after the alarm.
An answer computed in another process (the grader's :class:`~tutor.grading.verdicts.RemoteAnswer`)
is a :class:`RemoteCall` and keeps its own time limit.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterable, Iterator, Optional, Tuple

#: seconds one call of the learner's function may take by default (env TUTOR_CHECK_TIME_LIMIT overrides)
DEFAULT_TIME_LIMIT = 5.0
#: seconds after the alarm before the watchdog thread stops code that ignores SIGALRM
WATCHDOG_GRACE = 1.0


def time_limit() -> float:
    """Seconds one call of a learner's function may take (read when a check runs)."""
    try:
        seconds = float(os.environ.get("TUTOR_CHECK_TIME_LIMIT", DEFAULT_TIME_LIMIT))
    except ValueError:
        return DEFAULT_TIME_LIMIT
    return seconds if 0 < seconds < 3600 else DEFAULT_TIME_LIMIT


@contextlib.contextmanager
def pinned_torch() -> Iterator[None]:
    """Run the block with float32 on the CPU and grad mode on; restore the caller's torch defaults."""
    import torch
    dtype = torch.get_default_dtype()
    device = torch.get_default_device() if hasattr(torch, "get_default_device") else None
    grad = torch.is_grad_enabled()
    try:
        torch.set_default_dtype(torch.float32)
        if device is not None:
            torch.set_default_device("cpu")
        torch.set_grad_enabled(True)
        yield
    finally:
        torch.set_default_dtype(dtype)
        if device is not None:
            torch.set_default_device(None if device.type == "cpu" else device)
        torch.set_grad_enabled(grad)


def _raise_in(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(TimeLimitExceeded))


class TimeLimitExceeded(BaseException):
    """Raised inside the learner's code when it runs past the time limit.

    A ``BaseException`` so that a learner's ``except Exception:`` does not swallow it.
    """


def code_of(fn: Callable) -> Optional[Any]:
    """The code object of ``fn`` (of what it wraps, for a ``functools.wraps`` wrapper), or None.

    Two functions with the same code object run the same code, whatever their names."""
    fn = getattr(fn, "__wrapped__", fn)
    return getattr(fn, "__code__", None)


class RemoteCall:
    """Base of an answer that runs in another process and keeps its own time limit there (the
    grader's :class:`~tutor.grading.verdicts.RemoteAnswer`): :func:`call_with_limit` and
    :func:`probe_with_limit` hand it the call instead of running it here."""

    def call_limited(self, args: tuple, seconds: float, probe: Optional[str] = None
                     ) -> Tuple[Any, Optional[BaseException]]:
        """``(value, error)`` of the call on ``args`` within ``seconds``; with ``probe``, what the probe
        of that name saw of the call."""
        raise NotImplementedError


class CallWatcher:
    """Context manager: ``called`` holds the names of watched functions that ran inside it."""

    def __init__(self, functions: Iterable[Callable]):
        self._codes = {}
        for fn in functions:
            code = code_of(fn)
            if code is not None:
                self._codes[code] = f"{fn.__module__}.{fn.__qualname__}"
        self.called: list = []

    def _profile(self, frame, event, arg):
        if event == "call":
            name = self._codes.get(frame.f_code)
            if name is not None and name not in self.called:
                self.called.append(name)

    def __enter__(self) -> "CallWatcher":
        self._previous = sys.getprofile()
        if self._codes:
            sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc) -> None:
        sys.setprofile(self._previous)


def _call_in_main_thread(fn: Callable, args: tuple, seconds: float) -> Tuple[Any, Optional[BaseException]]:
    def on_alarm(signum, frame):
        raise TimeLimitExceeded(f"ran for more than {seconds:g} s")

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, seconds)
    # code that ignores or replaces the SIGALRM handler is stopped by this thread instead
    watchdog = threading.Timer(seconds + WATCHDOG_GRACE, _raise_in, (threading.get_ident(),))
    watchdog.daemon = True
    watchdog.start()
    try:
        try:
            return fn(*args), None
        finally:
            watchdog.cancel()
            signal.setitimer(signal.ITIMER_REAL, 0)     # disarm before anything else can run
    except TimeLimitExceeded as exc:
        return None, exc
    except (Exception, SystemExit) as exc:            # the learner's error, reported not raised
        return None, exc
    finally:
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_timer[0] > 0:                      # give an outer timer its time back
            signal.setitimer(signal.ITIMER_REAL, *previous_timer)


def _call_in_thread(fn: Callable, args: tuple, seconds: float,
                    watcher: Optional[CallWatcher]) -> Tuple[Any, Optional[BaseException]]:
    box: dict = {}

    def target():
        try:
            if watcher is not None:
                with watcher:
                    box["value"] = fn(*args)
            else:
                box["value"] = fn(*args)
        except BaseException as exc:                  # includes TimeLimitExceeded injected below
            box["error"] = exc

    worker = threading.Thread(target=target, name="tutor-check", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident),
                                                   ctypes.py_object(TimeLimitExceeded))
        worker.join(1.0)
        return None, TimeLimitExceeded(f"ran for more than {seconds:g} s")
    if "error" in box:
        error = box["error"]
        if isinstance(error, KeyboardInterrupt):
            raise error
        return None, error
    return box.get("value"), None


def probe_with_limit(probe: Callable, fn: Callable, args: tuple, seconds: float) -> Tuple[Any, Optional[BaseException]]:
    """``probe(fn, args)`` for at most ``seconds``: a probe watches how ``fn(*args)`` runs (lines, storages).

    An answer that lives in a graded kernel (a :class:`RemoteCall`) is probed there, by the probe of
    the same name in :mod:`tutor.grading.child`: its operations never run in this process, and calling
    it from :func:`call_with_limit`'s worker thread would share the kernel's channel between threads.
    """
    if isinstance(fn, RemoteCall):
        return fn.call_limited(args, seconds, probe=probe.__name__)
    return call_with_limit(probe, (fn, args), seconds)


def call_with_limit(fn: Callable, args: tuple, seconds: float,
                    watcher: Optional[CallWatcher] = None) -> Tuple[Any, Optional[BaseException]]:
    """Run ``fn(*args)`` for at most ``seconds``; returns ``(value, None)`` or ``(None, error)``.

    ``KeyboardInterrupt`` still propagates (the learner pressed stop); every other exception,
    ``SystemExit`` and :class:`TimeLimitExceeded` included, is returned as the error.
    """
    if isinstance(fn, RemoteCall):                     # runs in another process, under its own limit
        return fn.call_limited(args, seconds)
    use_signal = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not use_signal:
        return _call_in_thread(fn, args, seconds, watcher)
    if watcher is None:
        return _call_in_main_thread(fn, args, seconds)
    with watcher:
        return _call_in_main_thread(fn, args, seconds)
