"""The course map: the notebooks, in order, as data.

``NOTEBOOKS`` is the single list the command line (``python -m tutor``), the README and the
tests agree on. ``course_map(root)`` pairs each notebook with whether its file (and its exercise
twin under ``exercises/``) exists in a checkout; ``format_map`` turns that into printable lines.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple


@dataclass(frozen=True)
class Notebook:
    """One course notebook: its number, file name (same under notebooks/, exercises/, solutions/)."""
    number: int
    file: str
    title: str
    summary: str

    @property
    def path(self) -> str:
        """Path of the teaching notebook, relative to the repository root."""
        return f"notebooks/{self.file}"


NOTEBOOKS: Tuple[Notebook, ...] = (
    Notebook(0, "00_why_sparse_attention.ipynb", "Why sparse attention",
             "Dense attention costs O(T^2); a local window plus a few global tokens keeps long-range paths."),
    Notebook(1, "01_dense_masked_attention.ipynb", "Dense masked attention",
             "Build the local + global mask and the dense reference every faster version must match."),
    Notebook(2, "02_looped_sparse_attention.ipynb", "Looped sparse attention",
             "One query at a time, reading only the keys it may see: slow, but easy to read and check."),
    Notebook(3, "03_unfold_vectorization.ipynb", "Vectorizing with unfold",
             "Gather every window at once with unfold, handle the edges, and pay (2w+1)x memory for K."),
    Notebook(4, "04_gpu_hybrid.ipynb", "Memory-linear hybrid attention on CPU and GPU",
             "hybrid_attention's backends: blocked (everywhere), flex (CPU and CUDA), triton (CUDA), picked by 'auto'."),
    Notebook(5, "05_sparsity_pattern_zoo.ipynb", "A zoo of sparsity patterns",
             "Dilated, causal, block, BigBird and LSH patterns as mask factories: masks, costs, backends."),
    Notebook(6, "06_training_with_sparse_attention.ipynb", "Training with sparse attention",
             "A small encoder on a long-range task: local-only stays at chance, local + global solves it."),
    Notebook(7, "07_the_backward_pass.ipynb", "The backward pass",
             "Derive dS = P * (dP - D), recompute P from one log-sum-exp per row, and train at long T in O(T) memory."),
    Notebook(8, "08_beyond_one_device.ipynb", "Beyond one device: sequence parallelism",
             "Shard one sequence over ranks: halo exchange, all-gathered globals, merged global rows, on torch.distributed."),
    Notebook(9, "09_into_real_models.ipynb", "Into real models: conventions and a Longformer swap",
             "Every library's window in our words, the off-by-one fixed, our layer inside a Hugging Face Longformer."),
    Notebook(10, "10_sliding_windows_in_decoders.ipynb", "Sliding windows in today's decoders",
             "A ring KV cache, sink tokens and sink logits, 5:1 local/global memory, our attention inside HF decoders."),
)


class Entry(NamedTuple):
    """A notebook and what a checkout has of it."""
    notebook: Notebook
    exists: bool
    exercise_exists: bool


def course_root(start: Optional[Path] = None) -> Path:
    """The repository root: the source checkout this package lives in, else ``start`` or the cwd."""
    here = Path(__file__).resolve().parents[1]
    if (here / "pyproject.toml").is_file() and (here / "tutor").is_dir():
        return here
    return Path(start) if start is not None else Path.cwd()


def course_map(root: Path) -> List[Entry]:
    """Each notebook of the course, in order, with whether its file and exercise exist under ``root``."""
    root = Path(root)
    return [Entry(nb, (root / "notebooks" / nb.file).is_file(), (root / "exercises" / nb.file).is_file())
            for nb in NOTEBOOKS]


def format_map(entries: List[Entry]) -> List[str]:
    """Printable lines, one per notebook: number, title, file, and whether it (and its exercise) exist."""
    lines = []
    for nb, exists, has_exercise in entries:
        mark = "ok" if exists else "not yet written"
        extra = ", exercise" if has_exercise else ""
        lines.append(f"  {nb.number:02d}  {nb.title:<46} {nb.path}  [{mark}{extra}]")
        lines.append(f"      {nb.summary}")
    return lines
