"""Hybrid local + global sparse attention, four ways (see docs/spec.md for the contract).

* :func:`dense_attention`   - full T x T scores and one hybrid mask: the reference.
* :func:`looped_attention`  - the explicit per-query loop: readable, slow.
* :func:`unfold_attention`  - windows via ``unfold``: vectorized, (2w+1)x memory of K.
* :func:`hybrid_attention`  - memory-linear backends (``blocked`` everywhere, more on GPU), each
  module's entry point named ``<backend>_hybrid_attention`` (:mod:`.blocked`, :mod:`.flex`,
  :mod:`.triton_kernel`); FlexAttention's block masks live in :mod:`.block_masks`, their tile
  picture in :mod:`.tiles`.
* :func:`sparse_attention`  - one name over the four (:mod:`.sparse`, ``impl=``).

What every implementation shares: :mod:`.call` (the one door: each entry point checks its
arguments once, with the validators of :mod:`tutor.arguments`, into a frozen ``AttentionCall``
that the implementation runs), :mod:`.softmax` (the masked softmax, the log-sum-exp of a row:
``+inf`` for a row with no allowed key), :mod:`.global_tokens` (global tokens as index lists,
gathered and written back) and :mod:`.global_rows` (the global rows: one dense G x T pass, its
backward, its partial rows and their merge).
"""
from .dense import dense_attention
from .sparse import IMPLS, sparse_attention
from .hybrid import BACKENDS, choose_backend, hybrid_attention
from .layer import HybridSparseAttention
from .looped import looped_attention
from .unfold import unfold_attention

__all__ = ["dense_attention", "looped_attention", "unfold_attention", "hybrid_attention",
           "sparse_attention", "HybridSparseAttention", "BACKENDS", "IMPLS", "choose_backend"]
