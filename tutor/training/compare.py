"""Attention settings side by side: local-only, local + global and dense, same data, same init."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from .loop import History, evaluate, train_model
from .model import TinyEncoder
from .task import CLS, MarkerTask, make_contrast_set


@dataclass(frozen=True)
class Setting:
    """One attention configuration of the comparison."""
    name: str
    window: int
    impl: str = "hybrid"
    global_positions: Tuple[int, ...] = ()


def default_settings(window: int, T: int) -> List[Setting]:
    """Local-only (window ``w``), local + global ([CLS] global), and dense (window = T)."""
    return [Setting("local-only", window), Setting("local + global", window, global_positions=(CLS,)),
            Setting("dense", T, impl="dense")]


@dataclass
class Result:
    """A trained setting: its model, training history and held-out accuracy."""
    setting: Setting
    model: nn.Module
    history: History
    accuracy: float


def compare_settings(task: MarkerTask, settings: Sequence[Setting], *, steps: int = 150,
                     batch_size: int = 32, lr: float = 3e-3, seed: int = 0, eval_size: int = 1024,
                     progress: bool = True, device: "str | torch.device" = "cpu",
                     **model_kwargs) -> Dict[str, Result]:
    """Train one :class:`TinyEncoder` per setting (same init seed, same batches) and evaluate it.

    The held-out set is :func:`make_contrast_set` with ``eval_size`` sequences in all (rounded down
    to a multiple of C; seed ``seed + 10_000``). ``model_kwargs`` go to :class:`TinyEncoder`;
    models are trained on ``device`` (CPU by default, where runs are reproducible bit for bit).
    """
    tokens, labels, _ = make_contrast_set(task, eval_size // task.num_classes, seed + 10_000)  # (N, T), (N,)
    results = {}
    for s in settings:
        with torch.random.fork_rng():                                             # init without side effects
            torch.manual_seed(seed)
            model = TinyEncoder(task.vocab_size, task.num_classes, task.T, window=s.window,
                                impl=s.impl, global_positions=s.global_positions, **model_kwargs).to(device)
        hist = train_model(model, task, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                           progress=progress, desc=s.name)
        results[s.name] = Result(s, model, hist, evaluate(model, tokens, labels))
    return results


def format_table(results: Dict[str, Result], timing: bool = False) -> str:
    """One line per setting, ``name: accuracy`` (2 decimals); ``timing`` adds ms per step."""
    lines = []
    for name, r in results.items():
        times = r.history.step_time
        ms = f"  ({1e3 * sum(times) / len(times):.1f} ms/step)" if timing and times else ""
        lines.append(f"{name}: {r.accuracy:.2f}{ms}")
    return "\n".join(lines)
