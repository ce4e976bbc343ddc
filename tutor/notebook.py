"""One call at the top of every course notebook, so stored outputs are reproducible.

``setup()`` seeds Python, NumPy and torch, fixes torch's thread count, and sets matplotlib's
figure defaults (inline in a notebook). It returns the torch device the notebook should use (CUDA when available).
"""
from __future__ import annotations

import os
import random


def setup(seed: int = 0, threads: int = 2, quiet: bool = True):
    """Seed everything, pin the thread count, tidy matplotlib; returns the device to use."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    os.environ.setdefault("TQDM_MININTERVAL", "1")
    _inline_figures()
    try:
        import matplotlib as mpl
        mpl.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.4, 3.6), "savefig.dpi": 80,
                             "axes.grid": False, "svg.hashsalt": "tutor"})
    except ImportError:  # plotting is optional for the package, never for notebooks
        pass
    np.set_printoptions(precision=4, suppress=True)
    torch.set_printoptions(precision=4, sci_mode=False)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _inline_figures() -> None:
    """Inside IPython, show returned matplotlib Figures inline (the ``%matplotlib inline`` magic)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is not None and getattr(ip, "kernel", None) is not None:
        ip.run_line_magic("matplotlib", "inline")
