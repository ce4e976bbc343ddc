"""Exercises for notebook 06, training with sparse attention: how far a window reaches in L layers,
which tokens can influence the [CLS] read-out, and choosing the global tokens so the model can
see the marker (checked by what the mask lets through, not against one fixed answer)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..masks import hybrid_mask
from ..training import MarkerTask, make_batch, receptive_field
from .cases import Case, shown_global_mask
from .compare import compare_int, compare_tensor, tensor_problem
from .problem import FunctionProblem

NUMBER = "06"
NOTEBOOK = "06_training_with_sparse_attention"
TITLE = "Exercises 06 · Training with sparse attention"
INTRO = """The model of notebook 06 reads its answer at the `[CLS]` token, position 0, while the *marker*
that decides the label sits far away. Each attention layer moves information at most `window`
positions, unless a global token carries it. These exercises measure that reach and then ask you to
place the global tokens so the model *can* succeed."""


def layers_needed_reference(p: int, q: int, window: int) -> int:
    """Fewest local-only layers (window >= 1) after which position p's output depends on token q."""
    distance, layers = abs(p - q), 0
    while receptive_field(layers, window) < distance:
        layers += 1
    return layers


def cls_influence_reference(T: int, window: int, global_mask: Tensor, n_layers: int) -> Tensor:
    """(B, T) bool: the tokens whose value can reach position 0's output within ``n_layers`` layers.

    One layer lets query i read key j when ``hybrid_mask`` allows (i, j); the reached set grows
    by every key that a reached query may read.
    """
    allowed = hybrid_mask(T, window, global_mask)                          # (B, T, T)
    reached = torch.zeros(global_mask.shape, dtype=torch.bool)             # (B, T)
    reached[:, 0] = True                                                   # [CLS] sits at position 0
    for _ in range(n_layers):
        reached = (reached[:, :, None] & allowed).any(dim=1)               # (B, T) keys read by reached queries
    return reached


def choose_global_mask_reference(tokens: Tensor, window: int, n_layers: int) -> Tensor:
    """One good choice: make [CLS] global, so it reads every token in the first layer. (B, T) bool."""
    mask = torch.zeros(tokens.shape, dtype=torch.bool)                     # (B, T)
    mask[:, 0] = True                                                      # [CLS] sits at position 0
    return mask


def _batch(T: int, B: int, min_distance: int, seed: int, part: int):
    """Tokens (part 0) or marker positions (part 2) of a seeded MarkerTask batch."""
    task = MarkerTask(T=T, min_distance=min_distance)
    return lambda: make_batch(task, B, torch.Generator().manual_seed(seed))[part]


def compare_global_choice(got, expected: Tensor, case) -> Optional[str]:
    """A (B, T) bool mask with at most one global token per sequence that lets [CLS] see the marker."""
    problem = tensor_problem(got, expected, "your global_mask")
    if problem:
        return problem
    counts = got.sum(dim=1)                                                # (B,)
    if bool((counts > 1).any()):
        s = int(torch.nonzero(counts > 1)[0])
        return (f"sequence {s} has {int(counts[s])} global tokens; the budget is one per sequence "
                f"(with every token global you would be back to dense attention).")
    values = case.tensors()
    T, window, layers = values["tokens"].shape[1], values["window"], values["n_layers"]
    seen = cls_influence_reference(T, window, got, layers)                 # (B, T)
    marker = values["marker_pos"]                                          # (B,)
    blind = ~seen[torch.arange(len(marker)), marker]                       # (B,)
    if bool(blind.any()):
        s = int(torch.nonzero(blind)[0])
        chosen = torch.nonzero(got[s]).flatten().tolist()
        return (f"in sequence {s} the marker at position {int(marker[s])} cannot reach [CLS] in {layers} "
                f"layer(s) of window {window} with global tokens at {chosen}; "
                f"{int(blind.sum())} of {len(marker)} sequences are blind.")
    if not bool(seen.all()):                                               # the marker could be anywhere
        s, p = torch.nonzero(~seen)[0].tolist()
        chosen = torch.nonzero(got[s]).flatten().tolist()
        return (f"in sequence {s} the token at position {p} cannot reach [CLS] in {layers} layer(s) of window "
                f"{window} with global tokens at {chosen}. Your choice finds this batch's markers, but the "
                f"model does not know where the marker is: on other inputs it can sit at position {p}. "
                f"Choose global tokens that let every position reach [CLS].")
    return None


class LayersNeeded(FunctionProblem):
    id, title, _name = "06.q1", "How many layers does a window need?", "layers_needed"
    _prompt = """With local attention only, one layer lets position `p` read positions up to `window` away,
so after `L` layers its output depends on tokens up to `L * window` away (`tutor.training.receptive_field`).
Write `layers_needed(p, q, window)` returning, as an `int`, the fewest layers after which the output at
position `p` can depend on the token at position `q` (`window >= 1`; `p == q` needs no layer)."""
    _solution = '''def layers_needed(p, q, window):
    """Fewest local-only layers connecting position q to position p's output."""
    distance = abs(p - q)
    return -(-distance // window)           # ceil(distance / window) in integers
'''
    _hints = ("Each layer covers at most `window` more positions, in either direction.",
              "You need the smallest L with `L * window >= |p - q|`: a ceiling, not a floor.",
              "`-(-d // w)` is `ceil(d / w)` for integers, without floats.")
    _congrats = "A marker 100 tokens from [CLS] needs 13 layers of window 8: far more than a small model has."
    _reference = layers_needed_reference
    _compare = compare_int
    _cases = (Case("an exact multiple", {"p": 0, "q": 40, "window": 8}),
              Case("one past a multiple", {"p": 0, "q": 41, "window": 8}),
              Case("the same position", {"p": 7, "q": 7, "window": 3}),
              Case("q before p", {"p": 30, "q": 3, "window": 4}),
              Case("inside one window", {"p": 5, "q": 2, "window": 6}),
              Case("window 1", {"p": 2, "q": 11, "window": 1}),
              Case("a long way", {"p": 0, "q": 1000, "window": 7}))


class ClsInfluence(FunctionProblem):
    id, title, _name = "06.q2", "Which tokens can reach [CLS]?", "cls_influence"
    _prompt = """In one layer, query `i` reads key `j` when the hybrid rule allows `(i, j)`
(`tutor.masks.hybrid_mask(T, window, global_mask)`). Write `cls_influence(T, window, global_mask,
n_layers)` returning a `(B, T)` bool tensor, True for the tokens whose value can reach the output at
position 0 ([CLS]) within `n_layers` layers. Start from `{0}` and, layer by layer, add every key
that an already reached position may read. Every position reads itself (distance 0), so what was
reached stays reached."""
    _solution = '''from tutor.masks import hybrid_mask

def cls_influence(T, window, global_mask, n_layers):
    """(B, T) bool: tokens that can influence position 0 within n_layers layers."""
    allowed = hybrid_mask(T, window, global_mask)             # (B, T, T) query i reads key j
    reached = torch.zeros(global_mask.shape, dtype=torch.bool)
    reached[:, 0] = True                                      # [CLS] itself
    for _ in range(n_layers):
        # key j is reached if some reached query i may read it
        reached = (reached[:, :, None] & allowed).any(dim=1)  # (B, T)
    return reached
'''
    _hints = ("Keep a `(B, T)` bool vector of reached positions, True only at 0 to begin with.",
              "One layer: key `j` becomes reached when some reached query `i` has `allowed[batch, i, j]`. "
              "With broadcasting: `(reached[:, :, None] & allowed).any(dim=1)`.",
              "Repeat it `n_layers` times. A global key is read by every query, and a global query "
              "reads every key: with one global token, two layers reach everything.")
    _congrats = "With [CLS] global, one layer reaches every token; any other single global token needs two."
    _reference = cls_influence_reference
    _compare = compare_tensor
    _cases = (Case("no global token", {"T": 24, "window": 3, "global_mask": shown_global_mask(24, ()),
                                       "n_layers": 2}),
              Case("[CLS] global, one layer", {"T": 24, "window": 2, "global_mask": shown_global_mask(24, (0,)),
                                               "n_layers": 1}),
              Case("a global token in the middle, one layer", {"T": 30, "window": 2,
                                                               "global_mask": shown_global_mask(30, (15,)),
                                                               "n_layers": 1}),
              Case("a global token in the middle, two layers", {"T": 30, "window": 2,
                                                                "global_mask": shown_global_mask(30, (15,)),
                                                                "n_layers": 2}),
              Case("different globals per sequence", {"T": 20, "window": 1,
                                                      "global_mask": shown_global_mask(20, (), (9,), (0,)),
                                                      "n_layers": 3}),
              Case("window 0", {"T": 10, "window": 0, "global_mask": shown_global_mask(10, (6,)), "n_layers": 1}),
              Case("zero layers", {"T": 8, "window": 2, "global_mask": shown_global_mask(8, (3,)), "n_layers": 0}))


class ChooseGlobalMask(FunctionProblem):
    id, title, _name = "06.q3", "Choose the global tokens", "choose_global_mask"
    _prompt = """`tokens` is a `(B, T)` long batch of the marker task (`tutor.training.make_batch`): [CLS]
(token 0) at position 0, noise, and one marker (a token between 1 and the number of classes) at
least `min_distance` positions away. A model with `n_layers` layers of window `window` reads its
answer at position 0. Write `choose_global_mask(tokens, window, n_layers)` returning a `(B, T)` bool
`global_mask` with **at most one** global token per sequence such that the marker can reach position 0
in every sequence *wherever it lands*: the model does not know where the marker is, so every position
must be able to reach position 0. The check runs your mask through the reachability of question 2
on fresh batches, with 1 and 2 layers."""
    _solution = '''def choose_global_mask(tokens, window, n_layers):
    """(B, T) bool: at most one global token per sequence; [CLS] must be able to see the marker."""
    global_mask = torch.zeros(tokens.shape, dtype=torch.bool)   # (B, T)
    global_mask[:, 0] = True        # a global [CLS] reads every token in the first layer
    return global_mask
'''
    _hints = ("Which positions must be connected? The marker (somewhere far) and position 0.",
              "A global token reads every key, and every query reads it. What if position 0 itself is global?",
              "Making [CLS] global works with any number of layers. (Making the marker global is peeking "
              "at the answer: with one layer, the other positions could not reach [CLS].)")
    _congrats = ("With one layer only a global [CLS] lets every position through: this is why Longformer makes "
                 "[CLS] global for classification, one token with a direct line to everything.")
    _reference = choose_global_mask_reference
    _compare = compare_global_choice
    _cases = tuple(
        Case(name, {"tokens": _batch(T, B, dist, seed, 0), "window": w, "n_layers": L, "T": T, "B": B,
                    "marker_pos": _batch(T, B, dist, seed, 2)})
        for name, T, B, dist, seed, w, L in (
            ("one layer, window 4", 64, 6, 16, 60, 4, 1),
            ("two layers, window 2", 48, 6, 12, 61, 2, 2),
            ("the notebook's task, one layer", 128, 8, 32, 62, 8, 1),
            ("two sequences, two layers, window 8", 128, 2, 32, 63, 8, 2)))


QUESTIONS = (LayersNeeded(), ClsInfluence(), ChooseGlobalMask())
