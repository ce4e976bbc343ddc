"""Plotting functions of the course. Every function returns a matplotlib Figure (no widgets here).

Modules: ``masks`` (masks and attention maps), ``scaling`` (cost vs T), ``unfold`` (what unfold
does), ``blocks`` (query blocks and key spans), ``explorers`` (figures behind the widgets).
"""
from .masks import as_mask_array, plot_attention_map, plot_mask, plot_masks_grid  # noqa: F401
from .scaling import loglog_slope, plot_scaling  # noqa: F401
from .unfold import format_bytes, plot_memory_bars, plot_score_slots, plot_unfold, slot_kinds  # noqa: F401
from .timing import fit_power_law, format_seconds, plot_timings  # noqa: F401
from .training import moving_average, plot_cls_attention, plot_learning_curves  # noqa: F401
