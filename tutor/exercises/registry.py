"""The question registry: every question of the course, found by its id.

    questions()              # every question, in course order
    question("03.q2")        # one question, by its id "<notebook number>.q<k>"
    notebook_questions()     # {"03": [the questions of notebook 03], ...}

The question modules (``nb00`` ... ``nb09``, listed in :data:`MODULES`) are imported on first use,
by name: this module imports nothing of ours (not even for annotations), so ``progress`` (which lists the questions) and the
question base ``problem`` (which saves progress) never import each other in a circle.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Dict, Iterator, List

#: question modules, in course order
MODULES = ("nb00", "nb01", "nb02", "nb03", "nb04", "nb05", "nb06", "nb07", "nb08", "nb09", "nb10")


def question_modules() -> List[ModuleType]:
    """The question modules of :data:`MODULES`, imported, in course order."""
    return [importlib.import_module(f"{__package__}.{name}") for name in MODULES]


def questions() -> Iterator[Any]:
    """Every question (a :class:`~tutor.exercises.problem.Problem`), in course order."""
    for module in question_modules():
        yield from module.QUESTIONS


def notebook_questions() -> Dict[str, list]:
    """``{"00": [questions of notebook 00], ...}``: the question ids each notebook holds."""
    return {module.NUMBER: list(module.QUESTIONS) for module in question_modules()}


def question(qid: str) -> Any:
    """The question (a :class:`~tutor.exercises.problem.Problem`) with id ``qid`` (e.g. ``"03.q2"``)."""
    if not isinstance(qid, str):
        raise TypeError(f"qid must be a str like '03.q2', got {type(qid).__name__}")
    for q in questions():
        if q.id == qid:
            return q
    known = ", ".join(q.id for q in questions())
    raise ValueError(f"no question {qid!r}; the questions are: {known}")
