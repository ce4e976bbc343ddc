"""Training a tiny Transformer with sparse attention on a task a window cannot solve (notebook 06).

* :class:`MarkerTask` / :func:`make_batch` - seeded synthetic sequences: ``[CLS]`` at position 0,
  noise everywhere else except one *marker* token, far from the start, whose identity is the label.
  :func:`make_contrast_set` - held-out sequences in groups that differ only in the marker.
* :class:`TinyEncoder` - token + position embeddings, pre-norm blocks built on
  :class:`tutor.attention.HybridSparseAttention`, a classifier read out at position 0.
* :func:`train_model` / :func:`evaluate` - an AdamW loop that returns a :class:`History`.
* :func:`compare_settings` - local-only, local + global and dense attention on the same data.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import HybridSparseAttention

__all__ = ["CLS", "MarkerTask", "make_batch", "make_dataset", "make_contrast_set", "receptive_field",
           "TinyEncoder", "Setting", "default_settings", "History", "train_model", "evaluate", "Result",
           "compare_settings", "format_table"]

CLS = 0  # token id of [CLS]; markers are 1..C, noise C+1..C+num_noise


@dataclass(frozen=True)
class MarkerTask:
    """Sequences of ``seq_len`` tokens; the label is which of ``num_classes`` markers appears.

    The single marker sits at a uniformly random position in ``[min_distance, seq_len)``, so the
    answer is at least ``min_distance`` tokens away from ``[CLS]``, where it is read out.
    """
    seq_len: int = 128
    num_classes: int = 2
    num_noise: int = 16
    min_distance: int = 32

    def __post_init__(self):
        for name in ("seq_len", "num_classes", "num_noise", "min_distance"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if not self.min_distance < self.seq_len:
            raise ValueError(f"min_distance must be < seq_len, got min_distance={self.min_distance}, "
                             f"seq_len={self.seq_len}")

    @property
    def vocab_size(self) -> int:
        return 1 + self.num_classes + self.num_noise


def make_batch(task: MarkerTask, batch_size: int, generator: torch.Generator) -> Tuple[Tensor, Tensor, Tensor]:
    """One batch drawn with ``generator``: tokens (B, T) long, labels (B,) long, marker positions (B,)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    B, T, C = batch_size, task.seq_len, task.num_classes
    tokens = torch.randint(1 + C, task.vocab_size, (B, T), generator=generator)     # (B, T) noise
    labels = torch.randint(0, C, (B,), generator=generator)                         # (B,)
    pos = torch.randint(task.min_distance, T, (B,), generator=generator)            # (B,)
    tokens[:, 0] = CLS
    tokens[torch.arange(B), pos] = 1 + labels                                       # the marker
    return tokens, labels, pos


def make_dataset(task: MarkerTask, size: int, seed: int) -> Tuple[Tensor, Tensor, Tensor]:
    """A fixed set of ``size`` examples from its own seed (use a seed the training never uses)."""
    return make_batch(task, size, torch.Generator().manual_seed(seed))


def make_contrast_set(task: MarkerTask, num_groups: int, seed: int) -> Tuple[Tensor, Tensor, Tensor]:
    """``num_groups`` random sequences, each repeated once per class with only the marker changed.

    Returns tokens (num_groups * C, T), labels (num_groups * C,), marker positions (num_groups * C,);
    rows ``g*C .. g*C + C-1`` are group ``g``. A model blind to the marker gives one answer per
    group, so its accuracy is exactly 1/C.
    """
    tokens, _, pos = make_dataset(task, num_groups, seed)                         # (N, T), (N,)
    C = task.num_classes
    tokens, pos = tokens.repeat_interleave(C, 0), pos.repeat_interleave(C, 0)    # (N*C, T), (N*C,)
    labels = torch.arange(C).repeat(num_groups)                                   # (N*C,) 0, 1, .., C-1, 0, ..
    tokens[torch.arange(len(tokens)), pos] = 1 + labels
    return tokens, labels, pos


def receptive_field(num_layers: int, window: int) -> int:
    """How far information travels with local attention only: ``num_layers * window`` positions.

    Each layer lets a token read ``window`` positions to either side, so after L layers the
    output at position 0 depends on tokens 0 .. L*w and on nothing beyond.
    """
    return num_layers * window


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(LN(x)), then x + MLP(LN(x)). x (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int, num_heads: int, window: int, impl: str, mlp_ratio: int = 2):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = HybridSparseAttention(dim, num_heads, window, impl=impl)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor, global_mask: Optional[Tensor] = None, return_weights: bool = False):
        """x (B, T, D) -> (B, T, D) [, attention weights (B, H, T, T)]."""
        out = self.attn(self.norm1(x), global_mask, return_weights=return_weights)
        a, weights = out if return_weights else (out, None)
        x = x + a                                                                  # (B, T, D)
        x = x + self.mlp(self.norm2(x))                                            # (B, T, D)
        return (x, weights) if return_weights else x


class TinyEncoder(nn.Module):
    """Embeddings, ``num_layers`` blocks of sparse attention, a linear classifier on position 0.

    ``global_positions``: positions made global in every sequence (``(0,)`` = the [CLS] token).
    ``forward(tokens (B, T), global_mask=None) -> logits (B, num_classes)``; an explicit
    ``global_mask`` (B, T) bool replaces the one built from ``global_positions``. With
    ``return_weights=True`` it also returns a list of each layer's (B, H, T, T) attention weights.
    """

    def __init__(self, vocab_size: int, num_classes: int, max_len: int, *, dim: int = 32,
                 num_heads: int = 2, num_layers: int = 2, window: int = 4, impl: str = "hybrid",
                 global_positions: Sequence[int] = ()):
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if any(not 0 <= p < max_len for p in global_positions):
            raise ValueError(f"global_positions must lie in [0, max_len={max_len}), got {tuple(global_positions)}")
        self.max_len, self.global_positions = max_len, tuple(int(p) for p in global_positions)
        self.tok_emb, self.pos_emb = nn.Embedding(vocab_size, dim), nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(Block(dim, num_heads, window, impl) for _ in range(num_layers))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def default_global_mask(self, tokens: Tensor) -> Optional[Tensor]:
        """(B, T) bool with ``global_positions`` set, or None when there are none."""
        if not self.global_positions:
            return None
        mask = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)   # (B, T)
        mask[:, list(self.global_positions)] = True
        return mask

    def forward(self, tokens: Tensor, global_mask: Optional[Tensor] = None, return_weights: bool = False):
        if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype != torch.long:
            got = f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must be a (B, T) long tensor, got {got}")
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"tokens has T={tokens.shape[1]} > max_len={self.max_len}")
        if global_mask is None:
            global_mask = self.default_global_mask(tokens)
        pos = torch.arange(tokens.shape[1], device=tokens.device)                  # (T,)
        x = self.tok_emb(tokens) + self.pos_emb(pos)                               # (B, T, D)
        maps = []
        for block in self.blocks:
            x = block(x, global_mask, return_weights)                              # (B, T, D)
            if return_weights:
                x, weights = x
                maps.append(weights)                                               # (B, H, T, T)
        logits = self.head(self.norm(x[:, 0]))                                     # (B, C)
        return (logits, maps) if return_weights else logits


@dataclass(frozen=True)
class Setting:
    """One attention configuration of the comparison."""
    name: str
    window: int
    impl: str = "hybrid"
    global_positions: Tuple[int, ...] = ()


def default_settings(window: int, seq_len: int) -> List[Setting]:
    """Local-only (window ``w``), local + global ([CLS] global), and dense (window = T)."""
    return [Setting("local-only", window), Setting("local + global", window, global_positions=(CLS,)),
            Setting("dense", seq_len, impl="dense")]


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
            model = TinyEncoder(task.vocab_size, task.num_classes, task.seq_len, window=s.window,
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
