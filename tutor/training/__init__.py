"""Training a tiny Transformer with sparse attention on a task a window cannot solve (notebook 06).

* :class:`MarkerTask` / :func:`make_batch` - seeded synthetic sequences: ``[CLS]`` at position 0,
  noise everywhere else except one *marker* token, far from the start, whose identity is the label.
  :func:`make_contrast_set` - held-out sequences in groups that differ only in the marker.
* :class:`TinyEncoder` - token + position embeddings, pre-norm blocks built on
  :class:`tutor.attention.HybridSparseAttention`, a classifier read out at position 0.
* :func:`train_model` / :func:`evaluate` - an AdamW loop that returns a :class:`History`.
* :func:`compare_settings` - local-only, local + global and dense attention on the same data.

Modules: :mod:`.task` (the data), :mod:`.model` (the encoder), :mod:`.loop` (training and
evaluation), :mod:`.compare` (settings side by side and their table).
"""
from .compare import Result, Setting, compare_settings, default_settings, format_table
from .loop import History, evaluate, train_model
from .model import Block, TinyEncoder
from .task import CLS, MarkerTask, make_batch, make_contrast_set, make_dataset, receptive_field

__all__ = ["CLS", "MarkerTask", "make_batch", "make_dataset", "make_contrast_set", "receptive_field",
           "TinyEncoder", "Block", "Setting", "default_settings", "History", "train_model", "evaluate", "Result",
           "compare_settings", "format_table"]
