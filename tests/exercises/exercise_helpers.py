"""Shared by the exercise tests: run the learner-side solutions the way a notebook would, and check answers."""
import importlib

import torch

from tutor import exercises


def solved(qid: str):
    """The learner-side solution of ``qid`` and its namespace, defined after the solutions before it."""
    module = importlib.import_module(f"tutor.exercises.nb{qid[:2]}")
    ns = {"torch": torch}
    for q in module.QUESTIONS:
        exec(q.solution_code, ns)
        if q.id == qid:
            return ns[q.answer_name], ns
    raise KeyError(qid)


def solution(qid: str):
    """The stored learner-side solution of ``qid`` (not the reference, which the checkers watch for)."""
    return solved(qid)[0]


def check(qid: str, answer):
    """``exercises.question(qid).check(answer)``: the feedback a learner gets."""
    return exercises.question(qid).check(answer)
