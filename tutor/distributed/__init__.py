"""Sequence parallelism for hybrid attention: one sequence sharded over ranks (notebook 08).

    from tutor.distributed import sequence_parallel_attention
    out_shard = sequence_parallel_attention(q, k, v, window, global_mask, key_padding_mask, causal=False)

Each rank holds a contiguous shard (B, H, T_r, Dh) and gets its shard of ``hybrid_attention`` on
the whole sequence, with gradients across ranks. Modules, one idea each: ``sharding`` (cut and
gather a sequence), ``layout`` (the one exchange of shard lengths, and checks that raise on every
rank), ``halo`` (the keys within w that live elsewhere, moved by ``batch_isend_irecv``),
``collectives`` (differentiable all-gather and all-reduce), ``global_keys`` (all-gathering the
global tokens), ``merge`` (log-sum-exp merge of partial softmax states), ``attention`` (the
function), ``layer`` (the module form and gradient all-reduce), ``encoder`` (notebook 06's
TinyEncoder on a sharded sequence), ``traffic`` (bytes sent, and what all-gather or ring attention
would send), ``figures`` (notebook 08's pictures), ``launch`` (a local gloo group for notebooks and
tests), ``demo`` (``torchrun --nproc-per-node P -m tutor.distributed.demo``).
"""
from .attention import sequence_parallel_attention
from .halo import halo_pieces, halo_plan
from .merge import SoftmaxState, finish, merge_states, partial_state
from .sharding import gather_sequence, shard_bounds, shard_sequence
from .traffic import count_traffic

__all__ = ["sequence_parallel_attention", "halo_pieces", "halo_plan", "SoftmaxState", "partial_state",
           "merge_states", "finish", "shard_bounds", "shard_sequence", "gather_sequence", "count_traffic"]
