"""``write_global_rows``: the one write-back of global rows, in place or out of place."""
from __future__ import annotations

import pytest
import torch

from tutor.attention.global_tokens import global_slots, scatter_rows, write_global_rows


def slots():
    """Sequence 0: globals at 1 and 4; sequence 1: one global at 0 (its second slot invalid, idx 0)."""
    gm = torch.zeros(2, 6, dtype=torch.bool)
    gm[0, [1, 4]] = True
    gm[1, 0] = True
    return global_slots(gm, None, 2, 6, "cpu")                              # (B, G), (B, G)


@pytest.mark.parametrize("inplace", [False, True])
def test_write_global_rows_puts_each_valid_row_in_its_place(inplace):
    idx, valid = slots()
    assert idx.tolist() == [[1, 4], [0, 0]] and valid.tolist() == [[True, True], [True, False]]
    out = torch.arange(2 * 3 * 6 * 2, dtype=torch.float32).reshape(2, 3, 6, 2)  # (B, H, T, C)
    rows = -torch.arange(1, 2 * 3 * 2 * 2 + 1, dtype=torch.float32).reshape(2, 3, 2, 2)  # (B, H, G, C)
    want = out.clone()
    want[0, :, 1], want[0, :, 4], want[1, :, 0] = rows[0, :, 0], rows[0, :, 1], rows[1, :, 0]
    before = out.clone()
    got = write_global_rows(out, idx, valid, rows, inplace=inplace)
    assert torch.equal(got, want)                                         # the invalid slot wrote nothing
    assert (got is out) == inplace
    assert torch.equal(out, want if inplace else before)                  # out of place: out untouched


def test_write_global_rows_out_of_place_is_scatter_rows_and_differentiable():
    idx, valid = slots()
    out = torch.randn(2, 3, 6, 2, requires_grad=True)
    rows = torch.randn(2, 3, 2, 2, requires_grad=True)
    got = write_global_rows(out, idx, valid, rows, inplace=False)
    assert torch.equal(got, scatter_rows(out, idx, valid, rows))
    got.sum().backward()
    assert out.grad[0, :, [1, 4]].eq(0).all() and out.grad[0, :, [0, 2, 3, 5]].eq(1).all()
    assert rows.grad[1, :, 1].eq(0).all() and rows.grad[0].eq(1).all()    # the invalid slot gets no gradient
