"""Decoding benchmark: tokens/s and KV-cache memory against tokens generated, ring cache vs Hugging Face's caches.

    python -m tutor.bench.decode                          # the default run of docs/benchmarks/decode.md
    python -m tutor.bench.decode --tokens 256 1024 4096 --window 64

One tiny decoder shape (``--layers``, ``--dim``, ``--heads``, ``--kv-heads``, every layer with the
causal window ``--window``) decodes greedily one token at a time after a short prompt, through:

* ``ring``: :class:`tutor.decode.TinyDecoder` with a :class:`~tutor.decode.RingKVCache` per layer
  (``sinks + w + 1`` slots, allocated once);
* ``hf-sliding``: transformers' ``MistralForCausalLM`` of the same shape (``sliding_window = w + 1``)
  with ``DynamicCache(config=...)``, whose sliding layers keep the last ``sliding_window - 1`` keys,
  ``attn_implementation="eager"``; ``hf-sliding-tutor``: the same model and cache with our attention
  (:func:`tutor.interop.register_hf_attention`);
* ``hf-full``: the same model with ``DynamicCache()`` built without the config: a cache that does not
  know the window keeps every key (the window still masks them), so it grows with the stream.

Memory is *measured*: the bytes of the tensors each cache holds (``RingKVCache.nbytes``; the keys
and values of every transformers cache layer) at each checkpoint of ``--tokens``; speed is the
tokens per second of the steps since the previous checkpoint (one process, CPU threads fixed; the
caches take one token each in turn, so a busy shared CPU slows them alike).
The ring and the Mistral model are different models of the same sizes (RoPE, grouped K/V heads,
pre-norm; Mistral's MLP is gated): compare the shape of the curves, not the last digit. Without
transformers (the ``peers`` extra) only ``ring`` runs, and the table says so.
"""
from __future__ import annotations

import argparse
import functools
import inspect
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch

from ..decode import DecoderConfig, TinyDecoder

__all__ = ["CACHES", "decode_benchmark", "format_decode_rows", "main"]

CACHES = ("ring", "hf-sliding", "hf-sliding-tutor", "hf-full")


def _ring_stream(cfg: DecoderConfig, prompt: torch.Tensor, checkpoints: Sequence[int]):
    """Yield (tokens generated, bytes held or None between checkpoints) per token, TinyDecoder through its rings."""
    torch.manual_seed(0)
    model = TinyDecoder(cfg).eval()
    caches = model.new_caches()
    # no_grad around each call, never around a yield: a generator suspended inside `with no_grad()`
    # would leave gradients switched off in its caller
    with torch.no_grad():
        logits = model(prompt, caches)                                     # (1, P, V) prefill
    yield 0, sum(c.nbytes for c in caches)
    for n in range(1, max(checkpoints) + 1):
        nxt = logits[:, -1].argmax(-1, keepdim=True)                        # (1, 1)
        with torch.no_grad():
            logits = model(nxt, caches)
        yield n, (sum(c.nbytes for c in caches) if n in checkpoints else None)


def _hf_stream(kind: str, cfg: DecoderConfig, prompt: torch.Tensor, checkpoints: Sequence[int]):
    """Yield (tokens generated, bytes held or None between checkpoints) per token, transformers' Mistral."""
    from transformers import DynamicCache, MistralConfig, MistralForCausalLM
    from ..interop import register_hf_attention
    window = cfg.windows[0]
    config = MistralConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=2 * cfg.dim,
                           num_hidden_layers=len(cfg.windows), num_attention_heads=cfg.n_heads,
                           num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.dim // cfg.n_heads,
                           sliding_window=window + 1, max_position_embeddings=max(checkpoints) + 64,
                           pad_token_id=0)
    attn = register_hf_attention() if kind == "hf-sliding-tutor" else "eager"
    torch.manual_seed(0)
    model = MistralForCausalLM._from_config(config, attn_implementation=attn).eval()
    cache = DynamicCache() if kind == "hf-full" else DynamicCache(config=config)
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad():                                                  # (not around a yield: see above)
        logits = model(input_ids=prompt, use_cache=True, **{name: cache}).logits
    yield 0, 0                                                              # the prefill is not timed
    for n in range(1, max(checkpoints) + 1):
        nxt = logits[:, -1].argmax(-1, keepdim=True)                        # (1, 1)
        with torch.no_grad():
            logits = model(input_ids=nxt, use_cache=True, **{name: cache}).logits
        held = None
        if n in checkpoints:
            held = sum(t.numel() * t.element_size() for layer in cache.layers
                       for t in (layer.keys, layer.values) if isinstance(t, torch.Tensor))
        yield n, held


def decode_benchmark(tokens: Sequence[int] = (128, 256, 512, 1024, 2048), *, window: int = 32,
                     layers: int = 2, dim: int = 64, heads: int = 4, kv_heads: int = 2, prompt: int = 16,
                     caches: Sequence[str] = CACHES, threads: Optional[int] = 2) -> List[Dict[str, object]]:
    """Rows ``{"cache", "tokens", "kv_bytes", "tokens_per_s"}``, one per cache and checkpoint.

    ``tokens``: the checkpoints (tokens generated after the prompt), increasing. The HF caches are
    skipped (no rows, and a row with ``"skipped"``) when transformers is missing.
    """
    checkpoints = sorted({int(t) for t in tokens})
    if not checkpoints or checkpoints[0] < 1:
        raise ValueError(f"tokens must be positive token counts, got {list(tokens)}")
    unknown = [c for c in caches if c not in CACHES]
    if unknown:
        raise ValueError(f"caches must be among {CACHES}, got {unknown}")
    if threads:
        torch.set_num_threads(threads)
    cfg = DecoderConfig(windows=(window,) * layers, vocab_size=256, dim=dim, n_heads=heads, n_kv_heads=kv_heads)
    ids = torch.randint(1, cfg.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(0))
    streams, rows = {}, []
    for kind in caches:
        if kind != "ring":
            try:
                import transformers  # noqa: F401
            except ImportError:
                rows.append({"cache": kind, "skipped": "transformers is not installed (pip install -e '.[peers]')"})
                continue
        make = _ring_stream if kind == "ring" else functools.partial(_hf_stream, kind)
        list(make(cfg, ids, [4]))                                           # first calls (lazy imports) untimed
        streams[kind] = make(cfg, ids, checkpoints)
        next(streams[kind])                                                 # the prefill, untimed
    measured: Dict[str, List[Dict[str, object]]] = {kind: [] for kind in streams}
    spent = {kind: 0.0 for kind in streams}                                 # seconds since the last checkpoint
    last = 0
    for n in range(1, checkpoints[-1] + 1):                                 # one token per cache in turn: a busy
        for kind, stream in streams.items():                                # shared CPU slows every cache alike
            start = time.perf_counter()
            _, held = next(stream)
            spent[kind] += time.perf_counter() - start
            if held is not None:
                measured[kind].append({"cache": kind, "tokens": n, "kv_bytes": int(held),
                                       "tokens_per_s": (n - last) / max(spent[kind], 1e-9)})
                spent[kind] = 0.0
        if n in checkpoints:
            last = n
    return [row for kind in streams for row in measured[kind]] + rows


def format_decode_rows(rows: List[Dict[str, object]]) -> str:
    """A fixed-width table of :func:`decode_benchmark`'s rows."""
    lines = [f"{'cache':<18}{'tokens':>8}{'KV bytes':>12}{'tokens/s':>10}"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['cache']:<18}skipped: {r['skipped']}")
        else:
            lines.append(f"{r['cache']:<18}{r['tokens']:>8}{r['kv_bytes']:>12}{r['tokens_per_s']:>10.0f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[128, 256, 512, 1024, 2048],
                    help="checkpoints: tokens generated after the prompt")
    ap.add_argument("--window", type=int, default=32, help="our causal w (Mistral sliding_window = w + 1)")
    ap.add_argument("--layers", type=int, default=2, help="decoder layers, all windowed")
    ap.add_argument("--dim", type=int, default=64, help="model width")
    ap.add_argument("--heads", type=int, default=4, help="query heads")
    ap.add_argument("--kv-heads", type=int, default=2, help="key/value heads (grouped: heads / kv-heads per group)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--caches", default=",".join(CACHES), help=f"comma separated, among {CACHES}")
    opts = ap.parse_args(argv)
    try:
        rows = decode_benchmark(opts.tokens, window=opts.window, layers=opts.layers, dim=opts.dim,
                                heads=opts.heads, kv_heads=opts.kv_heads, threads=opts.threads,
                                caches=[c for c in opts.caches.split(",") if c])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_decode_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
