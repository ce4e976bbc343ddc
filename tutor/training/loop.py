"""The training loop: AdamW on fresh seeded batches, a :class:`History` per run, and evaluation."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .task import MarkerTask, make_batch


@dataclass
class History:
    """Per-step training loss, batch accuracy and wall time (seconds)."""
    loss: List[float] = field(default_factory=list)
    accuracy: List[float] = field(default_factory=list)
    step_time: List[float] = field(default_factory=list)


def train_model(model: nn.Module, task: MarkerTask, *, steps: int = 150, batch_size: int = 32,
                lr: float = 3e-3, seed: int = 0, progress: bool = True, desc: str = "") -> History:
    """Train ``model`` with AdamW on fresh batches drawn from a generator seeded with ``seed``.

    Batches are made on the CPU and moved to the model's device. Uses torch's current thread
    count (``tutor.notebook.setup`` pins it). ``progress`` shows a tqdm bar. Returns the
    :class:`History`; the model is trained in place.
    """
    from tqdm.auto import tqdm

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    hist = History()
    model.train()
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=True):
        tokens, labels, _ = make_batch(task, batch_size, gen)                     # (B, T), (B,)
        tokens, labels = tokens.to(device), labels.to(device)
        start = time.perf_counter()
        logits = model(tokens)                                                     # (B, C)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        hist.step_time.append(time.perf_counter() - start)
        hist.loss.append(loss.item())
        hist.accuracy.append((logits.argmax(-1) == labels).float().mean().item())
    return hist


@torch.no_grad()
def evaluate(model: nn.Module, tokens: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    """Fraction of ``tokens`` (N, T) whose predicted class equals ``labels`` (N,); eval mode."""
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    correct = sum((model(tokens[i:i + batch_size].to(device)).argmax(-1).cpu() == labels[i:i + batch_size])
                  .sum().item() for i in range(0, len(tokens), batch_size))
    return correct / len(tokens)
