"""Grade exercise notebooks: ``python -m tutor grade PATH... [--json FILE] [--timeout S] [--deadline S]``.

How a notebook is graded: it runs top to bottom in its own sandboxed kernel
(:mod:`tutor.grading.runner`), where the course's reference and forbidden functions are stubs and
``check()`` only notes the answer (:mod:`tutor.grading.child`). Then, in the grader's own process,
each question's checker runs with the reference, the cases and the comparison that live here, and
only the calls of the learner's function cross into the kernel and come back as plain data
(:mod:`tutor.grading.verdicts`). One point per question whose answer passes. A question counts
only in the notebook of its own number (``03_*.ipynb`` for ``03.q*``); an unnumbered notebook and a
second notebook with the same number in one folder get a row saying so and are not counted. A
notebook that hangs, dies, breaks the grader or is not a notebook gets a row that says why; the
``--json`` file is always written, before the table is printed; the table escapes every name and
note (:func:`printable`) and printing it never fails (:func:`say`). Limits that would vanish or
break every kernel (``--timeout nan``, ``--nproc 0``) are usage errors. A notebook that is a
symbolic link, or a file with several names (a hard link), is refused with a row saying so.

Threat model. The learner controls everything that runs in the kernel: the notebook, any process it
starts, and its view of the ``tutor`` package (it can patch, clone or re-execute anything there).
The grader trusts only its own process: it never reads what the kernel prints or stores, never
lets the kernel see an expected value, the grader's state or environment, and accepts back only
plain data (``torch.load(weights_only=True)``, no links, at most 64 MiB on disk with no compressed
entry, at most 256 MiB, a million objects and 8 levels once decoded, each occurrence of a shared
object counted again; expanded or overlapping tensors refused, every tensor copied to a storage
of its own). The kernel runs in a private
temporary folder with a clean environment. When the grader is root each running kernel has a user
id of its own (no account's; its folder and connection file are closed to every other kernel, and
its process limit is its own), never silently root: where those users cannot run this Python and
no mount namespace can show it read-only, the grader refuses unless ``--allow-root-kernels``; the
tutor package and torch must not be writable by them. Where kernels share one user (an ordinary
grader, or ``--allow-root-kernels``) they could reach each other, so notebooks are graded one at
a time whatever ``--jobs`` says, and the grader says so. Kernels run in a new mount and PID
namespace when ``unshare`` allows it (else a subreaper in its own session plus a sweep by an
environment token); every process of a kernel is in a ``pids`` cgroup of its own where one can be
made (root), and all of them are killed at the end however they detached; without namespaces and
without a cgroup (an ordinary user on most machines), a process that kills its jail, detaches and
re-executes itself with a clean environment can outlive the grader. In the namespace mode a kernel
has empty ``/tmp``, ``/var/tmp`` and ``/dev/shm`` of its own (1 GiB each, gone with it), a /proc
that shows only its own processes (not the grader's command line), and the submitted folders
covered (it sees no other learner's notebook); as root its folder is a 1 GiB tmpfs. Without
namespaces a kernel can read what other users may read and fill shared temporary folders.
A message frame from a kernel larger than 32 MiB (a ``display()`` of hundreds of MB) is dropped
unread by the grader's sockets. Cleanup removes a folder tree of any depth and each step runs whatever the one before did. Kernels
run under address-space, process-count and file-size limits, a per-cell and a per-notebook
deadline; all its processes are killed and its folder removed at the end. Everything
judging needs is imported before the first kernel starts; while judging, an import of a module not
loaded yet is refused (the checker fails closed), so no code a kernel could have written runs here.

What a question forbids is decided by what a function computes, not by its name: every course
function (public or private, of the floors below the teaching aids) that passes a question's own
checker is one the question watches (a red-team test calls them all), and while the answer to a
backward question runs, every operator autograd would run is refused in the kernel (an op on a
tensor that requires grad, an op run by the autograd engine, an aten ``*_backward`` op), whichever
route reaches it. Switching that watch off inside the kernel is tampering with the grader, like
digging out the stubs' originals.

What this cannot stop: a learner who writes the answer from the course's own source (the package
and the solutions are readable on disk) or digs the switched-off originals out of the stubs' module
with introspection (that is copying, a matter of academic honesty, not a forged verdict); a kernel
that burns its CPU share until its deadline; without a PID namespace and as the grader's own user,
a kernel can signal the grader's processes and edit files the grader's user may write (run the
grader as root, which gives each kernel its own user id, or on a read-only checkout); kernels of
different users still share the loopback network (without a connection file's key they cannot
talk to another kernel, only knock on its ports). The probes that
watch *how* an answer runs (a Python loop over T in 03, a (T, T) tensor in 04.q3) run where the
answer runs, in the kernel: a learner who patches them there can hide a loop or a large tensor from
them, never turn a wrong value into a correct one.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import stat
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..exercises.progress import write_atomically
from ..exercises.registry import notebook_questions


STATUS_WORDS = {"correct": "correct", "incorrect": "incorrect", "not_attempted": "not attempted"}


@dataclass
class QuestionGrade:
    id: str
    status: str
    points: int
    max_points: int
    message: str = ""


@dataclass
class NotebookGrade:
    path: str
    status: str                  # graded | timeout | kernel died | error | malformed | not found | refused
    note: str = ""
    questions: List[QuestionGrade] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(q.points for q in self.questions)

    @property
    def max_points(self) -> int:
        return sum(q.max_points for q in self.questions)


def find_notebooks(paths: Sequence[str]) -> List[Path]:
    """Files as given; folders give their ``*.ipynb`` (sorted, checkpoints skipped)."""
    return [path for path, _ in _find_with_folders(paths)]


def _find_with_folders(paths: Sequence[str]) -> List[Tuple[Path, str]]:
    """``(notebook, submission)``: a folder argument is one submission, a file belongs to its folder."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += [(x, str(p.resolve())) for x in sorted(p.rglob("*.ipynb"))
                      if ".ipynb_checkpoints" not in x.parts]
        else:
            found.append((p, str(p.resolve().parent)))
    return found


def _number(path: Path) -> Optional[str]:
    match = re.match(r"(\d\d)_", path.name)
    return match.group(1) if match else None


def _own_questions(path: Path) -> list:
    number = _number(path)
    return list(notebook_questions().get(number, [])) if number else []


def _shown(path: Path) -> str:
    if path.is_absolute() and not os.path.relpath(path).startswith(".."):
        return os.path.relpath(path)
    return str(path)


@dataclass
class Limits:
    """Per-cell and per-notebook wall-clock limits (s), memory (MiB) and processes of one kernel."""
    cell: float = 60
    notebook: float = 600
    memory_mb: int = 4096
    nproc: int = 256
    kernel: str = "python3"
    allow_root: bool = False     # run kernels as root where nobody cannot run this Python (unsafe)
    hide: Tuple[str, ...] = ()   # folders kernels may not see (the submissions; in a mount namespace)


def grade_notebook(path: Path, timeout: float = 60, kernel: str = "python3",
                   limits: Optional[Limits] = None) -> NotebookGrade:
    """Run one notebook in a sandboxed kernel and judge its own questions here."""
    limits = limits or Limits(cell=timeout, kernel=kernel)
    path = Path(path)
    own = _own_questions(path)
    blank = [QuestionGrade(q.id, "not_attempted", 0, 1) for q in own]
    try:
        return _grade(path, own, blank, limits)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:      # a grader error on one notebook is that notebook's row
        return NotebookGrade(_shown(path), "error", f"the grader failed on it: {type(exc).__name__}: "
                                                    f"{str(exc)[:200]}", blank)


class LinkRefused(ValueError):
    """A submitted notebook is a link (symbolic, or one of several names of one file): not graded."""


def read_submitted(path: Path, most: int = 50 << 20) -> str:
    """The text of the notebook file at ``path`` itself: :class:`LinkRefused` for a symbolic link or a
    file with more than one name (a hard link may point at someone else's work), ``ValueError`` for
    anything but a regular file of at most ``most`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        if os.path.islink(path):
            raise LinkRefused(f"a symbolic link (to {os.readlink(path)!r}); submit the notebook itself") from None
        raise
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_nlink > 1:
            raise LinkRefused(f"a hard link (this file has {info.st_nlink} names); submit a copy of your own")
        data = f.read(most + 1)
    if len(data) > most:
        raise ValueError(f"larger than {most >> 20} MB")
    return data.decode("utf-8")


def _grade(path: Path, own: list, blank: list, limits: Limits) -> NotebookGrade:
    import nbformat
    from .runner import NotebookKernel
    from .verdicts import judge
    shown = _shown(path)
    if not path.is_file() and not path.is_symlink():
        return NotebookGrade(shown, "not found", "no such file", blank)
    try:
        nb = nbformat.reads(read_submitted(path), as_version=4)
        nbformat.validate(nb)
    except LinkRefused as exc:
        return NotebookGrade(shown, "refused", f"not graded: {exc}", blank)
    except Exception as exc:  # not JSON, not a notebook, unreadable
        return NotebookGrade(shown, "malformed", f"not a readable notebook ({type(exc).__name__})", blank)
    with NotebookKernel(nb, limits.cell, limits.notebook, limits.memory_mb, limits.nproc, limits.kernel,
                        limits.allow_root, limits.hide) as k:
        # before any learner code: the stubs are in place from the first cell on
        ready, why = k.run("__import__('tutor.grading.child', fromlist=['install']).install()",
                           max(limits.cell, 120))
        if ready != "ok":
            return NotebookGrade(shown, "error", f"the grader could not prepare the kernel ({ready} {why})", blank)
        status, note = k.run_notebook()
        results = judge(k, own) if not k.dead else []
    if k.dead and not results:
        grades = [QuestionGrade(q.id, "not_attempted", 0, 1, "the kernel stopped before grading") for q in own]
        return NotebookGrade(shown, status, note, grades)
    grades = [QuestionGrade(r.question, r.status, int(r.status == "correct"), 1, r.message) for r in results]
    if k.expired:
        status, note = "timeout", f"the notebook ran past its {limits.notebook:g} s limit and was stopped"
    return NotebookGrade(shown, status, note, grades)


def grade_all(paths: Sequence[str], limits: Limits, jobs: int = 1, log=None) -> List[NotebookGrade]:
    """Grade every notebook found; unnumbered notebooks and repeated numbers get a row, no points.

    Everything judging needs is imported first (:func:`tutor.grading.verdicts.prepare`). Where
    kernels cannot be kept apart (:func:`one_at_a_time`) they run one at a time whatever ``jobs``."""
    from .verdicts import prepare
    from ..exercises.registry import questions
    prepare(list(questions()))
    if one_at_a_time(limits):
        jobs = 1
    from .runner import hideable
    limits = replace(limits, hide=tuple(hideable({folder for _, folder in _find_with_folders(paths)})))
    plan: List[Tuple[Path, Optional[str]]] = []       # (notebook, why it is not graded)
    first: Dict[Tuple[str, str], Path] = {}
    for path, folder in _find_with_folders(paths):
        number = _number(path)
        if number is None:
            plan.append((path, "unnumbered"))
        elif (folder, number) in first:
            plan.append((path, f"duplicate: notebook {number} of this folder is {_shown(first[folder, number])}"))
        else:
            first[folder, number] = path
            plan.append((path, None))

    def grade(item) -> NotebookGrade:
        path, skip = item
        if skip == "unnumbered":
            return NotebookGrade(_shown(path), "unnumbered", "not graded: its name does not start with a "
                                                             "notebook number such as 03_")
        if skip:
            return NotebookGrade(_shown(path), "duplicate", f"not counted ({skip})")
        if log:
            say(f"grading {printable(str(path))} ...", log)
        return grade_notebook(path, limits=limits)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(grade, plan))             # each notebook has its own kernel


def one_at_a_time(limits: Limits) -> Optional[str]:
    """Why notebooks must be graded one at a time here (kernels would run as one user, able to read
    each other's connection files and share one process limit), or None when they may run at once."""
    from .runner import UnsafeKernel, kernel_user
    try:
        user = kernel_user(limits.allow_root)
    except UnsafeKernel:
        return None                                    # nothing runs at all
    if user.separate:
        return None
    return (f"grading one notebook at a time: the kernels run as {user.described}, so two at once could "
            f"reach each other")


def printable(text: str, most: int = 300) -> str:
    """``text`` as one line of visible characters: control characters (newlines, terminal escapes),
    invisible format characters and undecodable bytes shown as ``\\x..`` / ``\\u....`` escapes;
    at most ``most`` characters."""
    out = []
    for ch in str(text)[:most]:
        if ch.isprintable() and ch != "\\":
            out.append(ch)
        elif ch == "\\":
            out.append("\\\\")
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out) + ("..." if len(str(text)) > most else "")


def say(text: str, stream) -> None:
    """Print ``text`` on ``stream`` whatever its encoding; a closed or broken stream is ignored."""
    try:
        try:
            stream.write(text + "\n")
        except UnicodeEncodeError:
            encoding = getattr(stream, "encoding", None) or "ascii"
            stream.write((text + "\n").encode(encoding, "backslashreplace").decode(encoding, "replace"))
        stream.flush()
    except (OSError, ValueError):
        pass


def format_table(grades: Sequence[NotebookGrade]) -> str:
    """A plain-text table: notebook x question, points, and the total. Every name and note is
    :func:`printable`: a file name cannot add rows, move the cursor or colour the terminal."""
    width = max([len("notebook")] + [len(printable(g.path)) for g in grades])
    line = f"{{:<{width}}}  {{:<9}}  {{:<15}}  {{:>7}}"
    rows = [line.format("notebook", "question", "result", "points"), "-" * (width + 38)]
    for g in grades:
        name = printable(g.path)
        if g.status != "graded" or g.note:
            rows.append(line.format(name, "-", printable(g.status), "") + (f"  {printable(g.note)}" if g.note else ""))
            name = ""
        for q in g.questions:
            rows.append(line.format(name, printable(q.id), STATUS_WORDS.get(q.status, printable(q.status)),
                                    f"{q.points}/{q.max_points}"))
            name = ""
        rows.append(line.format("", "", "subtotal", f"{g.points}/{g.max_points}"))
    total, most = sum(g.points for g in grades), sum(g.max_points for g in grades)
    percent = 100.0 * total / most if most else 0.0
    rows += ["-" * (width + 38), line.format("TOTAL", "", f"{percent:.1f} %", f"{total}/{most}")]
    return "\n".join(rows)


def to_json(grades: Sequence[NotebookGrade]) -> dict:
    """The same content as the table, as JSON-ready data."""
    total, most = sum(g.points for g in grades), sum(g.max_points for g in grades)
    return {"notebooks": [dict(asdict(g), points=g.points, max_points=g.max_points) for g in grades],
            "points": total, "max_points": most, "percent": round(100.0 * total / most, 2) if most else 0.0}


def write_json(grades: Sequence[NotebookGrade], target: str) -> Optional[str]:
    """Write the JSON report atomically; returns a reason when it could not be written."""
    try:
        write_atomically(Path(target), json.dumps(to_json(grades), indent=2) + "\n", prefix=".grades-")
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _bounded(kind, low, high):
    """An argparse type: a finite ``kind`` (int or float) from ``low`` to ``high``, else a clear error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {kind(low)} to {kind(high)}, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line of ``python -m tutor grade``; 0 when it graded, 2 when nothing to grade, 1 when the
    JSON file could not be written, 3 when it refuses to run kernels as root (``--allow-root-kernels``)."""
    ap = argparse.ArgumentParser(prog="python -m tutor grade", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="notebooks or folders of notebooks")
    ap.add_argument("--json", metavar="FILE", help="also write the grades as JSON to FILE")
    ap.add_argument("--timeout", type=_bounded(float, 0.5, 86400), default=60,
                    help="seconds each cell may run, 0.5 to 86400 (default 60)")
    ap.add_argument("--deadline", type=_bounded(float, 1, 7 * 86400), default=600,
                    help="seconds each notebook may run, 1 to 604800 (default 600)")
    ap.add_argument("--memory-mb", type=_bounded(int, 1024, 1 << 22), default=4096,
                    help="address space of a kernel, at least 1024 MiB (a kernel with torch needs it; default 4096)")
    ap.add_argument("--nproc", type=_bounded(int, 32, 1 << 16), default=256,
                    help="processes and threads of one kernel, at least 32 (default 256)")
    ap.add_argument("--kernel", default="python3", help="Jupyter kernel to run the notebooks in")
    ap.add_argument("--jobs", type=_bounded(int, 1, 32), default=1, help="notebooks run at once, 1 to 32 (default 1)")
    ap.add_argument("--allow-root-kernels", action="store_true",
                    help="when run as root and the user nobody cannot run this Python (and no mount namespace "
                         "can expose it), run the kernels as root instead of refusing: unsafe, a notebook can "
                         "then change the grader")
    opts = ap.parse_args(list(argv) if argv is not None else None)
    if not find_notebooks(opts.paths):
        print("nothing to grade: no .ipynb file in " + ", ".join(opts.paths), file=sys.stderr)
        return 2
    limits = Limits(opts.timeout, opts.deadline, opts.memory_mb, opts.nproc, opts.kernel, opts.allow_root_kernels)
    from .runner import UnsafeKernel, kernel_user
    try:
        print(f"kernels run as {kernel_user(limits.allow_root).described}", file=sys.stderr)
    except UnsafeKernel as exc:
        print(f"python -m tutor grade: {exc}", file=sys.stderr)
        return 3
    serial = one_at_a_time(limits)
    if serial and opts.jobs > 1:
        print(serial, file=sys.stderr)
    grades = grade_all(opts.paths, limits, opts.jobs, log=sys.stderr)
    problem = write_json(grades, opts.json) if opts.json else None       # first: printing may fail
    say(format_table(grades), sys.stdout)
    if problem:
        say(f"could not write {printable(opts.json)}: {printable(problem)}", sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
