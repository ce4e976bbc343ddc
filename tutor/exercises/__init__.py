"""Graded exercises for the course notebooks (docs/spec.md, "The exercises API").

    from tutor import exercises
    q = exercises.question("03.q2")      # stable id "<notebook number>.q<k>"
    q.check(my_fn)                       # feedback: correct | incorrect | not_attempted
    q.hint(); q.hint(2); q.solution()    # tiered hints; the solution is one explicit call away
    q.reference                          # what the checker treats as correct

One module per course notebook (``nb00`` ... ``nb09``) holds one small data class per question;
``registry`` finds them (``questions()``, ``question(id)``), ``problem`` is their base, ``cases``
and ``compare`` are the checkers' inputs and comparisons, ``loops`` and ``footprint`` the probes
that watch how an answer runs, ``sandbox`` runs learner code under a time limit, ``feedback``
shows a check's result, ``progress`` saves what you solved and ``authoring`` writes the exercise
and solution notebooks from the question data. Grading whole notebooks
(``python -m tutor grade PATH``) is :mod:`tutor.grading`, on the floor above.
"""
from __future__ import annotations

from .feedback import ____, Result, is_blank
from .problem import FunctionProblem, Problem, ValueProblem
from .progress import keep_progress, show_progress
from .registry import MODULES, notebook_questions, question, questions

__all__ = ["____", "question", "questions", "notebook_questions", "show_progress", "keep_progress", "Problem",
           "FunctionProblem", "ValueProblem", "Result", "is_blank", "MODULES"]
