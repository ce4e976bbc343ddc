"""Verdicts in the grader's process: each question's own checker runs here (``q.judge``), and only
the calls of the learner's function cross into the sandboxed kernel.

For every question of the notebook the grader asks the kernel what the learner last checked
(:func:`tutor.grading.child.describe`). A function becomes a :class:`RemoteAnswer`: calling it
writes the grader's inputs to a fresh file, runs :func:`tutor.grading.child.call` in the kernel
and reads back the value and the arguments as they are after the call, with
``torch.load(weights_only=True)`` (tensor subclasses and custom objects are refused, files are
size-capped and opened without following links). The reference, the cases and the comparison
never leave this process, so whatever the notebook does to its own copy of them changes nothing.
"""
from __future__ import annotations

import importlib.abc
import io
import keyword
import os
import secrets
import stat
import sys
import threading
import zipfile
from typing import Any, List, Optional, Tuple

import torch

from ..exercises.feedback import Result
from ..exercises.sandbox import RemoteCall, TimeLimitExceeded, pinned_torch, time_limit

MAX_BYTES = 64 << 20          # what one answer may send back, as a file
MAX_DECODED = 256 << 20       # bytes of tensors and strings once decoded, each occurrence counted
MAX_ITEMS = 1_000_000         # objects visited once decoded, each occurrence counted
MAX_DEPTH = 8
GRACE = 5.0                    # seconds past the answer's own time limit before the kernel is stopped


class NotPlainData(ValueError):
    """What the kernel sent back is not plain data (or not there, or too large once decoded)."""


def _overlaps(x: torch.Tensor) -> bool:
    """Does ``x`` read an element of its storage twice (an ``expand``, a stride 0, overlapping strides)?"""
    expected = 1
    for stride, size in sorted((st, sz) for st, sz in zip(x.stride(), x.shape) if sz > 1):
        if stride < expected:
            return True
        expected = stride * size
    return False


class _Budget:
    """What decoding may still cost: bytes and items, each occurrence of a shared object counted again."""

    def __init__(self):
        self.bytes, self.items = MAX_DECODED, MAX_ITEMS

    def spend(self, nbytes: int) -> None:
        self.bytes -= nbytes
        self.items -= 1
        if self.bytes < 0 or self.items < 0:
            raise NotPlainData(f"larger than {MAX_DECODED >> 20} MiB or {MAX_ITEMS} objects once decoded")


def _plain(x, depth: int = 0, budget: Optional[_Budget] = None):
    """``x`` if it holds only tensors, numbers, strings, None, lists, tuples and dicts, within the
    limits of depth, decoded size and object count; every tensor gets a storage of its own."""
    budget = budget or _Budget()
    if depth > MAX_DEPTH:
        raise NotPlainData("nested too deeply")
    if isinstance(x, torch.Tensor):
        if type(x) not in (torch.Tensor, torch.nn.Parameter) or x.layout != torch.strided:
            raise NotPlainData(f"a {type(x).__name__} is not a plain torch.Tensor")
        if x.device.type != "cpu" or _overlaps(x):
            raise NotPlainData("a tensor that repeats its elements (expanded or overlapping) or is not on the CPU")
        budget.spend(x.numel() * x.element_size())
        return x.detach().clone()                  # its own storage: no aliasing between answers' tensors
    if x is None or type(x) in (bool, int, float, complex):
        budget.spend(0)
        return x
    if type(x) is str:
        budget.spend(len(x))
        return x
    if type(x) in (list, tuple):
        budget.spend(0)
        return type(x)(_plain(v, depth + 1, budget) for v in x)
    if type(x) is dict:
        budget.spend(0)
        return {_plain(k, depth + 1, budget): _plain(v, depth + 1, budget) for k, v in x.items()}
    raise NotPlainData(f"a {type(x).__name__} is not plain data")


def _stored_only(data: bytes) -> None:
    """A ``torch.save`` file whose entries are stored, not compressed, and add up to at most
    MAX_BYTES: nothing in it expands when read (a deflated entry could hold gigabytes)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise NotPlainData("not a torch.save file") from None
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries):
        raise NotPlainData("compressed entries are not accepted")
    if sum(e.file_size for e in entries) > MAX_BYTES:
        raise NotPlainData(f"larger than {MAX_BYTES >> 20} MiB once unpacked")


def load_plain(path: str) -> Any:
    """Read what the kernel wrote at ``path``: a regular file, at most MAX_BYTES, stored (not
    compressed) entries only, plain data only, within MAX_DECODED bytes, MAX_ITEMS objects and
    MAX_DEPTH levels once decoded; expanded or overlapping tensors are refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise NotPlainData(f"nothing came back ({type(exc).__name__})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:
            raise NotPlainData("the answer file is not a small regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise NotPlainData("the answer file is not a small regular file")
    _stored_only(data)
    try:
        obj = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:
        raise NotPlainData(f"not plain data ({type(exc).__name__})") from None
    return _plain(obj)


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _write_new(path: str, obj) -> None:
    """Write ``obj`` with torch.save to a file that must not exist yet (no link is followed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        torch.save(obj, f)


def _remote_error(kind: str, name: str, message: str) -> BaseException:
    if kind == "timeout":
        return TimeLimitExceeded(message)
    if kind == "not_implemented":
        return NotImplementedError(message)
    name = name if name.isidentifier() and not keyword.iskeyword(name) and len(name) <= 60 else "Error"
    return type(name, (Exception,), {})(message[:300])


class Opaque:
    """Stands for a checked value that could not cross as plain data (its type name is kept)."""


class RemoteAnswer(RemoteCall):
    """The learner's function, living in the sandboxed kernel; calls cross as plain data."""

    def __init__(self, kernel, qid: str):
        self.kernel, self.qid = kernel, qid

    def _paths(self) -> Tuple[str, str]:
        name = secrets.token_hex(8)
        return str(self.kernel.folder / "in" / f"{name}.pt"), str(self.kernel.out_dir / f"{name}.pt")

    def call_limited(self, args: tuple, seconds: float, probe: Optional[str] = None
                     ) -> Tuple[Any, Optional[BaseException]]:
        """``(value, error)`` of the answer on ``args``, or with ``probe`` (a name of
        :data:`tutor.grading.child.PROBES`) what that probe saw of the call: an int, else 0."""
        if self.kernel.dead:
            return None, RuntimeError("the notebook's kernel had stopped before this call")
        inp, out = self._paths()
        _write_new(inp, list(args))
        source = (f"__import__('tutor.grading.child', fromlist=['call']).call("
                  f"{self.qid!r}, {inp!r}, {out!r}, {float(seconds)!r}, {probe!r})")
        status, _ = self.kernel.run(source, seconds + GRACE)
        if status == "timeout":
            return None, TimeLimitExceeded(f"ran for more than {seconds:g} s (the kernel was stopped)")
        if status != "ok":
            return None, RuntimeError("the notebook's kernel stopped during this call")
        try:
            reply = load_plain(out)
            if type(reply) is not dict or type(reply.get("after")) is not list:
                raise NotPlainData("not the expected reply")
        except NotPlainData as exc:
            return None, TypeError(f"your function's result could not be sent back to the grader: {exc}. "
                                   f"Return plain tensors, numbers or lists.")
        finally:
            for path in (inp, out):
                try:
                    os.unlink(path)
                except OSError:
                    pass
        self._write_back(args, reply["after"])
        error = reply.get("error")
        if error is not None:
            if type(error) is not tuple or len(error) != 3 or not all(type(e) is str for e in error):
                return None, TypeError("an unreadable error came back")
            return None, _remote_error(*error)
        if probe is not None:        # a count from the learner's kernel: an int or nothing seen
            value = reply.get("value")
            return (value if type(value) is int and value >= 0 else 0), None
        return reply.get("value"), None

    @staticmethod
    def _write_back(args: tuple, after: list) -> None:
        """Mirror in-place changes the answer made to its arguments (the checker looks for them)."""
        for given, changed in zip(args, after):
            try:
                if isinstance(given, torch.Tensor) and isinstance(changed, torch.Tensor):
                    if changed.shape == given.shape and changed.dtype == given.dtype:
                        given.copy_(changed)
                    else:
                        given.set_(changed.to(given.dtype).contiguous())
                elif isinstance(given, list) and isinstance(changed, list):
                    given[:] = changed
            except (RuntimeError, TypeError):
                pass

    def __call__(self, *args):
        value, error = self.call_limited(args, time_limit())
        if error is not None:
            raise error
        return value


def _describe(kernel, qid: str) -> dict:
    out = str(kernel.out_dir / f"describe-{secrets.token_hex(8)}.pt")
    status, _ = kernel.run(f"__import__('tutor.grading.child', fromlist=['describe']).describe({qid!r}, {out!r})",
                           30)
    if status != "ok":
        return {"kind": "dead"}
    try:
        info = load_plain(out)
    except NotPlainData:
        return {"kind": "opaque", "type": "unreadable"}
    finally:
        try:
            os.unlink(out)
        except OSError:
            pass
    return info if type(info) is dict and info.get("kind") in ("none", "blank", "callable", "value", "opaque") \
        else {"kind": "opaque", "type": "unreadable"}


_JUDGING = threading.local()


class _NoImportWhileJudging(importlib.abc.MetaPathFinder):
    """Refuses, in a thread that is judging, every import of a module not loaded yet: a kernel may
    have written its file (the checker then fails closed: "could not judge")."""

    def find_spec(self, name, path=None, target=None):
        if getattr(_JUDGING, "on", False):
            raise ImportError(f"{name} was not imported before grading began: the grader imports nothing "
                              f"while judging")
        return None


def prepare(questions) -> None:
    """Import, before the first kernel starts, everything judging ``questions`` needs (references and
    forbidden functions resolved), and refuse new imports while judging from then on."""
    import importlib
    for name in ("tutor.exercises.compare", "tutor.exercises.footprint", "tutor.exercises.loops",
                 "torch.utils._device", "torch.fx.experimental.symbolic_shapes",    # what checkers load lazily
                 "encodings.cp437"):                                               # zipfile, lazily
        importlib.import_module(name)
    with pinned_torch():
        data = _saved([torch.zeros(1), 1])
        _stored_only(data)
        _plain(torch.load(io.BytesIO(data), weights_only=True))
    for q in questions:
        q.watched()
    if not any(isinstance(f, _NoImportWhileJudging) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoImportWhileJudging())


def judge(kernel, questions) -> List[Result]:
    """One Result per question, judged here from what the kernel's learner checked (nothing is
    imported meanwhile: see :func:`prepare`)."""
    infos = [(q, _describe(kernel, q.id)) for q in questions]
    _JUDGING.on = True
    try:
        return _judge(kernel, infos)
    finally:
        _JUDGING.on = False


def _judge(kernel, infos) -> List[Result]:
    results = []
    for q, info in infos:
        kind = info["kind"]
        if kind == "none":
            results.append(Result(q.id, "not_attempted", "never checked"))
        elif kind == "dead":
            results.append(Result(q.id, "incorrect", "could not be graded: the notebook's kernel had stopped"))
        elif kind == "blank":
            results.append(q.judge(None))
        elif kind == "value":
            results.append(q.judge(info.get("value")))
        elif kind == "callable":
            results.append(q.judge(RemoteAnswer(kernel, q.id)))
        else:
            name = str(info.get("type", "object"))
            name = name if name.isidentifier() and len(name) <= 60 else "object"
            results.append(q.judge(type(name, (Opaque,), {})()))
    return results
