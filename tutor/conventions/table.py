"""The conventions table, as data: how each library names and counts the window and the global tokens.

One :class:`Convention` per library setting; ``to_ours`` / ``from_ours`` are the formulas the
converters of :mod:`.windows` implement (named in ``converters``), ``docs`` the page that documents
the library's rule. ``same_pairs`` says whether the converted setting selects exactly our pairs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

__all__ = ["Convention", "CONVENTIONS", "convention", "table_rows"]


@dataclass(frozen=True)
class Convention:
    """How one library setting names and counts the window and the global tokens."""
    key: str            # short id, e.g. "longformer"
    library: str        # the library and the name of the setting
    counts: str         # what its number counts
    from_ours: str      # its setting for our one-sided radius w
    to_ours: str        # our w for its setting
    global_tokens: str  # how (whether) it names global tokens
    same_pairs: str     # "yes", or where the pairs differ
    converters: Tuple[str, ...]
    docs: str


CONVENTIONS: Tuple[Convention, ...] = (
    Convention("ours", "tutor: window, global_mask, key_padding_mask",
               "one-sided radius: |i - j| <= w, 2w + 1 keys (causal: w + 1, the query included)",
               "w", "w", "global_mask (B, T) bool, True = global; key_padding_mask True = padding",
               "yes", ("tutor.masks.hybrid_mask",), "docs/spec.md"),
    Convention("flex", "PyTorch FlexAttention: mask_mod(b, h, q_idx, kv_idx)",
               "a predicate, True = may attend; no number, any rule",
               "hybrid_mask_mod(w, ...)", "read it off the predicate",
               "any predicate (OR a global term in)", "yes",
               ("tutor.conventions.to_flex_mask_mod",),
               "https://pytorch.org/docs/stable/nn.attention.flex_attention.html"),
    Convention("flash", "flash-attn: window_size=(left, right)",
               "keys i - left .. i + right, both ends inclusive; -1 = no limit",
               "(w, w); causal: (w, 0) with causal=True", "w = left = right",
               "none (window only)", "yes",
               ("tutor.conventions.to_flash_window_size", "tutor.conventions.from_flash_window_size"),
               "https://github.com/Dao-AILab/flash-attention/blob/main/flash_attn/flash_attn_interface.py"),
    Convention("sdpa", "PyTorch scaled_dot_product_attention: attn_mask",
               "bool (B, H, T, T), True = may attend; float = added to scores",
               "hybrid_mask(T, w, ...)[:, None]", "read it off the mask",
               "rows/columns of the mask; a row with no True: NaN or 0, by version",
               "yes (zero the padded rows yourself)",
               ("tutor.conventions.to_sdpa_mask",),
               "https://pytorch.org/docs/stable/generated/torch.nn.functional.scaled_dot_product_attention.html"),
    Convention("mha", "PyTorch nn.MultiheadAttention: key_padding_mask, attn_mask",
               "bool, True = may NOT attend (the opposite of SDPA)",
               "~hybrid_mask(T, w, ...)", "read it off the mask",
               "key_padding_mask True = padding (ours)", "yes (invert the mask)",
               ("tutor.masks.hybrid_mask",),
               "https://pytorch.org/docs/stable/generated/torch.nn.MultiheadAttention.html"),
    Convention("longformer", "HF Longformer: config.attention_window",
               "the total width 2w (even, > 0, one per layer); the model pads T to a multiple of it",
               "attention_window = 2w", "w = attention_window // 2",
               "global_attention_mask long, 1 = global; attention_mask 1 = real token, 0 = padding",
               "yes (w >= 2: attention_window=2 crashes inside transformers 5.24)", ("tutor.conventions.to_longformer", "tutor.conventions.from_longformer",
                                "tutor.conventions.to_longformer_masks", "tutor.conventions.from_longformer_masks"),
               "https://huggingface.co/docs/transformers/model_doc/longformer"),
    Convention("bigbird", "HF BigBird: block_size, num_random_blocks",
               "blocks of b tokens: query block q reads key blocks q-1..q+1, plus r random blocks",
               "none exact; block_size = w covers it (up to 2w - 1 keys on one side)",
               "between b and 2b - 1 keys on each side, by position in the block",
               "the first and last block (2b tokens), fixed; full attention when T is short",
               "no: whole blocks", ("tutor.conventions.to_bigbird", "tutor.conventions.bigbird_window_bounds"),
               "https://huggingface.co/docs/transformers/model_doc/big_bird"),
    Convention("local_attention", "lucidrains local-attention: LocalAttention(window_size, look_backward, "
               "look_forward, exact_windowsize)",
               "buckets of window_size; a query reads look_backward/look_forward whole buckets, cut to "
               "window_size * look when exact_windowsize",
               "window_size = w, look 1/1, exact_windowsize=True", "w = window_size * look (exact only)",
               "none (mask = key padding, True = real token)", "yes with exact_windowsize=True",
               ("tutor.conventions.to_local_attention", "tutor.conventions.from_local_attention"),
               "https://github.com/lucidrains/local-attention"),
    Convention("natten", "NATTEN: kernel_size, dilation, is_causal",
               "the full neighbourhood 2w + 1, shifted inward at the ends",
               "kernel_size = 2w + 1", "w = (kernel_size - 1) // 2",
               "none", "interior only: NATTEN keeps kernel_size keys at the ends",
               ("tutor.conventions.to_natten", "tutor.conventions.from_natten"),
               "https://natten.org"),
    Convention("sliding_window", "Mistral / Gemma config: sliding_window (causal)",
               "keys j with i - sliding_window < j <= i: the query counts, so w + 1 keys",
               "sliding_window = w + 1", "w = sliding_window - 1",
               "none", "yes (causal)",
               ("tutor.conventions.to_sliding_window", "tutor.conventions.from_sliding_window"),
               "https://huggingface.co/docs/transformers/model_doc/mistral"),
)


def convention(key: str) -> Convention:
    """The row with ``key`` (e.g. ``"longformer"``)."""
    return row_with_key(CONVENTIONS, key, "convention")


def row_with_key(rows, key: str, what: str):
    """The row of ``rows`` (a table of rows with a ``key``) whose key is ``key``; a ValueError naming
    the keys there are otherwise."""
    for row in rows:
        if row.key == key:
            return row
    raise ValueError(f"no {what} {key!r}; the keys are {[r.key for r in rows]}")


def table_rows(fields: Tuple[str, ...] = ("library", "counts", "from_ours", "same_pairs")) -> List[Tuple[str, ...]]:
    """The table as tuples of ``fields`` (for printing or a DataFrame)."""
    return [tuple(getattr(row, f) for f in fields) for row in CONVENTIONS]
