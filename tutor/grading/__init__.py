"""Grade exercise notebooks: ``python -m tutor grade PATH...`` (``--help`` lists the options).

One module per concern, the grader's process first:

* :mod:`.cli` - finding the notebooks, one row per notebook, the table, the JSON report, ``main``.
* :mod:`.runner` - one notebook in its own sandboxed kernel: private folder, clean environment,
  limits, deadlines, nothing left running.
* :mod:`.jail` - the plain script that starts a kernel under its limits (standard library only).
* :mod:`.verdicts` - each question's checker, run here, on answers whose calls cross into the kernel
  as plain data.

and the kernel's side, which decides nothing:

* :mod:`.child` - run in the graded kernel before its first cell: stubs in place, ``check()`` only
  records; afterwards it describes and calls the recorded answers for the grader.
* :mod:`.stubs` - the course's own functions switched off while grading.

The questions, their checkers and the time limit of one call live in :mod:`tutor.exercises`, on
the floor below; the threat model is in :mod:`.cli`.
"""
from .cli import (STATUS_WORDS, Limits, NotebookGrade, QuestionGrade, find_notebooks, format_table, grade_all,
                  grade_notebook, main, to_json, write_json)

__all__ = ["STATUS_WORDS", "Limits", "NotebookGrade", "QuestionGrade", "find_notebooks", "format_table",
           "grade_all", "grade_notebook", "main", "to_json", "write_json"]
