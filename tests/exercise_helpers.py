"""Shared by the exercise tests: run the learner-side solutions the way a notebook would."""
import importlib

import torch


def solved(qid: str):
    """The learner-side solution of ``qid`` and its namespace, defined after the solutions before it."""
    module = importlib.import_module(f"tutor.exercises.nb{qid[:2]}")
    ns = {"torch": torch}
    for q in module.QUESTIONS:
        exec(q._solution, ns)
        if q.id == qid:
            return ns[q._name], ns
    raise KeyError(qid)
