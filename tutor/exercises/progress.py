"""Your progress through the exercises, kept in a small JSON file between sessions.

The file lives in the user data directory (``platformdirs.user_data_dir("tutor")`` when platformdirs
is installed, else ``~/.local/share/tutor``) as ``progress.json``; the environment variable
``TUTOR_PROGRESS_FILE`` points it elsewhere. Writes are atomic (a temporary file, then
``os.replace``). A corrupt or unreadable file gives a warning and a fresh start, never an error.

When ``TUTOR_GRADE_RESULTS`` names a file, every check result is also appended to it as one JSON
line: that is how ``python -m tutor grade`` collects results from the kernel it runs.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

PROGRESS_ENV = "TUTOR_PROGRESS_FILE"
GRADE_ENV = "TUTOR_GRADE_RESULTS"
VERSION = 1


_KEEP = {"progress": True}


class ProgressWarning(UserWarning):
    """The progress file could not be read or written; exercises keep working."""


def keep_progress(enabled: bool = True) -> None:
    """Turn saving check results to the progress file on or off for this session.

    The solution notebooks turn it off: running the answer key must not count as your progress.
    (Results still reach a listening grader.)
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


def load(path: Optional[Path] = None) -> Dict:
    """The saved progress ``{"version": 1, "questions": {id: entry}}``; fresh when missing or bad."""
    path = Path(path) if path is not None else progress_path()
    if not path.exists():
        return _fresh()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        warnings.warn(f"could not read the progress file {path} ({type(exc).__name__}); starting fresh",
                      ProgressWarning, stacklevel=2)
        return _fresh()
    entries = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
        warnings.warn(f"the progress file {path} is not in the expected format; starting fresh",
                      ProgressWarning, stacklevel=2)
        return _fresh()
    return {"version": VERSION, "questions": entries}


def save(data: Dict, path: Optional[Path] = None) -> None:
    """Write ``data`` atomically: a temporary file in the same folder, then ``os.replace``."""
    path = Path(path) if path is not None else progress_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".progress-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def record(result) -> None:
    """Remember a check result (and hand it to the grader when one is listening). Never raises."""
    grade_file = os.environ.get(GRADE_ENV)
    if grade_file:
        try:
            with open(grade_file, "a", encoding="utf-8") as f:
                f.write(json.dumps({"id": result.question, "status": result.status,
                                    "message": result.message}) + "\n")
        except OSError as exc:
            warnings.warn(f"could not write the grading record {grade_file}: {exc}", ProgressWarning)
    if not _KEEP["progress"]:
        return
    try:
        data = load()
        entry = data["questions"].setdefault(result.question, {})
        entry["status"] = result.status
        entry["solved"] = bool(entry.get("solved")) or result.status == "correct"
        entry["attempts"] = int(entry.get("attempts", 0)) + (result.status != "not_attempted")
        entry["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        save(data)
    except (OSError, TypeError, ValueError) as exc:
        warnings.warn(f"could not save your progress to {progress_path()}: {exc}", ProgressWarning)


def progress_rows(path: Optional[Path] = None) -> List[Tuple[str, str, str]]:
    """``(id, title, state)`` for every question in course order; state: solved | tried | not yet."""
    from . import questions
    entries = load(path)["questions"]
    rows = []
    for q in questions():
        entry = entries.get(q.id, {})
        state = "solved" if entry.get("solved") else "tried" if entry.get("attempts") else "not yet"
        rows.append((q.id, q.title, state))
    return rows


def show_progress() -> None:
    """Display which questions are solved (a table in a notebook, text elsewhere)."""
    from .feedback import show
    rows = progress_rows()
    solved = sum(state == "solved" for _, _, state in rows)
    marks = {"solved": "✅ solved", "tried": "✏️ tried", "not yet": "· not yet"}
    head = f"Solved {solved} of {len(rows)} questions."
    markdown = "\n".join([head, "", "| question | title | state |", "|---|---|---|"]
                         + [f"| {i} | {t} | {marks[s]} |" for i, t, s in rows])
    plain = "\n".join([head] + [f"{i:7s} {s:8s} {t}" for i, t, s in rows])
    show(markdown, plain)
