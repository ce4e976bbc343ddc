"""tutor: the helper package of the sparse-attention course.

Floors (each imports only from the ones below): ``masks`` -> ``attention``, ``viz`` -> teaching
aids (``widgets``, ``bench``, ``exercises``) -> ``grading`` -> the command line (``python -m tutor``);
docs/architecture.md has the full table.
Importing ``tutor`` is cheap and has no side effects; submodules load on first use.
"""
__version__ = "0.1.0"


def progress(notebook=None):
    """Show which exercise questions you have solved; ``progress("03")``: those of notebook 03 only
    (see :mod:`tutor.exercises.progress`)."""
    from .exercises.progress import show_progress
    return show_progress(notebook)
