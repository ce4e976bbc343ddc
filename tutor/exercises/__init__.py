"""Graded exercises for the course notebooks (docs/spec.md, "The exercises API").

    from tutor import exercises
    q = exercises.question("03.q2")      # stable id "<notebook number>.q<k>"
    q.check(my_fn)                       # feedback: correct | incorrect | not_attempted
    q.hint(); q.hint(2); q.solution()    # tiered hints; the solution is one explicit call away
    q.reference                          # what the checker treats as correct

One module per course notebook (``nb00`` ... ``nb06``) holds one small data class per question;
``problem`` is their base, ``sandbox`` runs learner code under a time limit, ``progress`` saves
what you solved, ``grading`` grades whole notebooks (``python -m tutor grade PATH``) and
``authoring`` writes the exercise and solution notebooks from the question data.
"""
from __future__ import annotations

import importlib
from typing import Dict, Iterator

from .feedback import ____, Result, is_blank
from .problem import FunctionProblem, Problem, ValueProblem
from .progress import keep_progress

#: question modules, in course order
MODULES = ("nb00", "nb01", "nb02", "nb03", "nb04", "nb05", "nb06", "nb07", "nb08", "nb09")

__all__ = ["____", "question", "questions", "notebook_questions", "show_progress", "keep_progress", "Problem",
           "FunctionProblem", "ValueProblem", "Result", "is_blank", "MODULES"]


def _modules():
    return [importlib.import_module(f"{__name__}.{name}") for name in MODULES]


def questions() -> Iterator[Problem]:
    """Every question, in course order."""
    for module in _modules():
        yield from module.QUESTIONS


def notebook_questions() -> Dict[str, list]:
    """``{"00": [questions of notebook 00], ...}``: the question ids each notebook holds."""
    return {module.NUMBER: list(module.QUESTIONS) for module in _modules()}


def question(qid: str) -> Problem:
    """The question with id ``qid`` (e.g. ``"03.q2"``)."""
    if not isinstance(qid, str):
        raise TypeError(f"qid must be a str like '03.q2', got {type(qid).__name__}")
    for q in questions():
        if q.id == qid:
            return q
    known = ", ".join(q.id for q in questions())
    raise ValueError(f"no question {qid!r}; the questions are: {known}")


def show_progress(notebook=None) -> None:
    """Display which questions you have solved (same as ``tutor.progress(notebook)``)."""
    from .progress import show_progress as _show
    _show(notebook)
