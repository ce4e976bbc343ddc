"""Your progress through the exercises, kept in a small JSON file between sessions.

The file lives in the user data directory (``platformdirs.user_data_dir("tutor")`` when platformdirs
is installed, else ``~/.local/share/tutor``) as ``progress.json``; the environment variable
``TUTOR_PROGRESS_FILE`` points it elsewhere. Progress is per learner, shown per notebook with
``tutor.progress("03")`` and reset with ``python -m tutor progress [--notebook NN] --reset``.

Every write holds an ``fcntl`` lock (``progress.json.lock``), reads the file again, merges this
result into it and replaces the file atomically (a temporary file, then ``os.replace``): kernels
checking at the same time lose nothing. Reading never raises and never hangs: only a regular file
of at most 1 MB is read (a FIFO, a device or a huge file is refused without opening it for long),
bad JSON (deep nesting included) and bad entries (``1e400`` attempts) give a
:class:`ProgressWarning`, and a corrupt file is kept as ``progress.json.corrupt-<time>`` before the
next write starts afresh. Grading never reads this file (see :mod:`tutor.grading`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from . import registry

PROGRESS_ENV = "TUTOR_PROGRESS_FILE"
VERSION = 1
MAX_BYTES = 1 << 20
MAX_ATTEMPTS = 10 ** 9
LOCK_WAIT = 1.0                # seconds a writer waits for the lock before giving up with a warning
STUCK_FOR = 60.0               # after giving up, seconds during which a held lock is not waited for again

_KEEP = {"progress": True}


class ProgressWarning(UserWarning):
    """The progress file could not be read or written; exercises keep working."""


class _Corrupt(ValueError):
    """The file is there but is not readable progress."""


def keep_progress(enabled: bool = True) -> None:
    """Turn saving check results to the progress file on or off for this session.

    The solution notebooks turn it off: running the answer key must not count as your progress.
    """
    _KEEP["progress"] = bool(enabled)


def progress_path() -> Path:
    """Where progress is kept (see the module docstring)."""
    override = os.environ.get(PROGRESS_ENV)
    if override:
        return Path(override).expanduser()
    try:
        from platformdirs import user_data_dir
        folder = Path(user_data_dir("tutor", appauthor=False))
    except ImportError:
        folder = Path.home() / ".local" / "share" / "tutor"
    return folder / "progress.json"


def _fresh() -> Dict:
    return {"version": VERSION, "questions": {}}


def _warn(message: str) -> None:
    warnings.warn(message, ProgressWarning, stacklevel=3)


def _read_bytes(path: Path) -> Optional[bytes]:
    """The file's bytes; None when missing; _Corrupt when not a small regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)        # a FIFO opens at once and is refused below
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _Corrupt(f"cannot be opened ({type(exc).__name__})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Corrupt("is not a regular file")
        if info.st_size > MAX_BYTES:
            raise _Corrupt(f"is larger than {MAX_BYTES} bytes")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(MAX_BYTES + 1)
    finally:
        os.close(fd)


def _entry(raw) -> Dict:
    """A clean entry: bool solved, int attempts in range, str status/updated."""
    if not isinstance(raw, dict):
        raise _Corrupt("has an entry that is not an object")
    attempts = raw.get("attempts", 0)
    if isinstance(attempts, bool) or not isinstance(attempts, (int, float)) or not 0 <= attempts <= MAX_ATTEMPTS \
            or attempts != attempts:
        raise _Corrupt(f"has an attempt count out of range ({str(attempts)[:20]})")
    status = raw.get("status", "not_attempted")
    return {"status": status if status in ("correct", "incorrect", "not_attempted") else "not_attempted",
            "solved": raw.get("solved") is True, "attempts": int(attempts),
            "updated": str(raw.get("updated", ""))[:40]}


def _parse(data: bytes) -> Dict:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Corrupt(f"is not JSON ({type(exc).__name__})") from None
    entries = obj.get("questions") if isinstance(obj, dict) else None
    if not isinstance(entries, dict):
        raise _Corrupt("is not in the expected format")
    return {"version": VERSION, "questions": {str(k)[:20]: _entry(v) for k, v in entries.items()}}


def load(path: Optional[Path] = None) -> Dict:
    """The saved progress ``{"version": 1, "questions": {id: entry}}``; fresh when missing or bad."""
    path = Path(path) if path is not None else progress_path()
    try:
        data = _read_bytes(path)
        return _fresh() if data is None else _parse(data)
    except _Corrupt as exc:
        _warn(f"the progress file {path} {exc}; starting fresh")
        return _fresh()


def write_atomically(path: Path, text: str, prefix: str = ".tmp-") -> None:
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder, then ``os.replace``
    (a reader sees the old file or the new one, never half of one; the temporary file never stays)."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=Path(path).parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(data: Dict, path: Optional[Path] = None) -> None:
    """Write ``data`` atomically (:func:`write_atomically`)."""
    path = Path(path) if path is not None else progress_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(data, indent=1, sort_keys=True), prefix=".progress-")


_STUCK: Dict[str, float] = {}   # progress file -> when its lock was last found held too long


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``<path>.lock`` (waits at most LOCK_WAIT seconds)."""
    import fcntl
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}.lock is not a regular file")
        waited = 0.0
        patience = 0.0 if time.monotonic() - _STUCK.get(str(path), -STUCK_FOR) < STUCK_FOR else LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                _STUCK.pop(str(path), None)
                break
            except BlockingIOError:
                if waited >= patience:       # once stuck, later checks do not wait again for a while
                    _STUCK[str(path)] = time.monotonic()
                    raise OSError(f"another process holds {path}.lock") from None
                time.sleep(0.01)
                waited += 0.01
        yield
    finally:
        os.close(fd)                   # releases the lock


def _update(change, path: Optional[Path] = None) -> None:
    """Under the lock: read the file again, apply ``change(questions)``, write it atomically.

    A corrupt file is renamed to ``<name>.corrupt-<time>`` (a backup) before starting afresh.
    """
    path = Path(path) if path is not None else progress_path()
    if path.is_symlink() and (path.is_file() or not path.exists()):   # kept elsewhere: update it there
        path = Path(os.path.realpath(path))
    with _locked(path):
        try:
            raw = _read_bytes(path)
            data = _fresh() if raw is None else _parse(raw)
        except _Corrupt as exc:
            backup = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            try:
                if path.is_symlink() or path.is_file():
                    os.replace(path, backup)
                    _warn(f"the progress file {path} {exc}; kept it as {backup.name} and started fresh")
                else:
                    raise OSError(f"{path} {exc}")
            except OSError as err:
                raise OSError(f"{path} {exc} and could not be moved aside ({err})") from None
            data = _fresh()
        change(data["questions"])
        save(data, path)


def record(result) -> None:
    """Remember a check result in the progress file. Never raises."""
    if not _KEEP["progress"]:
        return

    def change(questions: Dict) -> None:
        entry = questions.setdefault(result.question, _entry({}))
        entry["status"] = result.status
        entry["solved"] = bool(entry.get("solved")) or result.status == "correct"
        entry["attempts"] = min(MAX_ATTEMPTS, int(entry.get("attempts", 0)) + (result.status != "not_attempted"))
        entry["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        _update(change)
    except (OSError, TypeError, ValueError) as exc:
        _warn(f"could not save your progress to {progress_path()}: {exc}")


def reset(notebook: Optional[str] = None, path: Optional[Path] = None) -> int:
    """Forget the progress of every question (or of notebook ``"NN"`` only); returns how many."""
    prefix = _notebook_prefix(notebook)
    removed = []

    def change(questions: Dict) -> None:
        for qid in [q for q in questions if prefix is None or q.startswith(prefix)]:
            removed.append(questions.pop(qid))
    _update(change, path)
    return len(removed)


def _notebook_prefix(notebook) -> Optional[str]:
    if notebook is None:
        return None
    text = str(notebook).strip()
    if isinstance(notebook, bool) or not (text.isdigit() and len(text) <= 2):
        raise ValueError(f"notebook must be a notebook number such as '03', got {notebook!r}")
    return f"{int(text):02d}."


def progress_rows(path: Optional[Path] = None, notebook: Optional[str] = None) -> List[Tuple[str, str, str]]:
    """``(id, title, state)`` per question in course order (of one notebook if given); state:
    solved | tried | not yet."""
    prefix = _notebook_prefix(notebook)
    entries = load(path)["questions"]
    rows = []
    for q in registry.questions():
        if prefix is not None and not q.id.startswith(prefix):
            continue
        entry = entries.get(q.id, {})
        state = "solved" if entry.get("solved") else "tried" if entry.get("attempts") else "not yet"
        rows.append((q.id, q.title, state))
    return rows


def _summary(rows, notebook) -> str:
    solved = sum(state == "solved" for _, _, state in rows)
    where = f" of notebook {_notebook_prefix(notebook)[:2]}" if notebook is not None else ""
    return f"Solved {solved} of {len(rows)} questions{where}."


def show_progress(notebook: Optional[str] = None) -> None:
    """Display which questions are solved (of notebook ``"NN"`` only if given): a table in a notebook,
    text elsewhere."""
    from .feedback import show
    rows = progress_rows(notebook=notebook)
    marks = {"solved": "✅ solved", "tried": "✏️ tried", "not yet": "· not yet"}
    head = _summary(rows, notebook)
    markdown = "\n".join([head, "", "| question | title | state |", "|---|---|---|"]
                         + [f"| {i} | {t} | {marks[s]} |" for i, t, s in rows])
    plain = "\n".join([head] + [f"{i:7s} {s:8s} {t}" for i, t, s in rows])
    show(markdown, plain)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m tutor progress [--notebook NN] [--reset]``: show or reset your progress."""
    ap = argparse.ArgumentParser(prog="python -m tutor progress", description=main.__doc__)
    ap.add_argument("--notebook", metavar="NN", help="only the questions of notebook NN (e.g. 03)")
    ap.add_argument("--reset", action="store_true", help="forget the progress shown (asks nothing)")
    opts = ap.parse_args(list(argv) if argv is not None else None)
    try:
        _notebook_prefix(opts.notebook)
    except ValueError as exc:
        ap.error(str(exc))
    if opts.reset:
        try:
            n = reset(opts.notebook)
        except OSError as exc:
            print(f"could not reset {progress_path()}: {exc}", file=sys.stderr)
            return 1
        which = f"notebook {opts.notebook}" if opts.notebook else "every notebook"
        print(f"Progress of {which} reset ({n} question(s) forgotten) in {progress_path()}.")
        return 0
    show_progress(opts.notebook)
    return 0
