"""A FlexAttention ``BlockMask`` read back as a picture: which tiles are empty, partial or full.

:func:`tile_states` turns the block mask's sparse (count, index) lists into a dense grid of tile
states, for :func:`tutor.viz.blocks.plot_tile_states` and for tests that count tiles.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["tile_states"]


def _selected(num: Tensor, idx: Tensor) -> Tensor:
    """Rows of selected tiles as a 0/1 grid: num (nq,), idx (nq, nk) -> (nq, nk) int8."""
    nq, nk = idx.shape
    sel = torch.arange(nk, device=idx.device)[None, :] < num[:, None]      # (nq, nk): first num[m] entries
    grid = torch.zeros(nq, nk + 1, dtype=torch.int8, device=idx.device)
    grid.scatter_(1, torch.where(sel, idx, nk).long(), 1)                  # unselected -> spare column
    return grid[:, :nk]                                                    # (nq, nk)


def tile_states(block_mask, batch: int = 0) -> Tensor:
    """Tile grid of batch element ``batch``: (n_q_tiles, n_kv_tiles) int8, 0 empty, 1 partial, 2 full."""
    states = _selected(block_mask.kv_num_blocks[batch, 0], block_mask.kv_indices[batch, 0])
    if block_mask.full_kv_num_blocks is not None:
        states = states + 2 * _selected(block_mask.full_kv_num_blocks[batch, 0], block_mask.full_kv_indices[batch, 0])
    return states.cpu()
