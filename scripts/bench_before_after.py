"""Time the attention of two commits side by side, in ONE process, repeats interleaved.

A refactor must not move speed: this loads the ``tutor`` package of an older commit as
``tutor_before`` (``git archive`` into a temporary folder, absolute ``tutor`` imports renamed)
next to the checkout's own ``tutor``, and times both on the same inputs with
:func:`tutor.bench.timing.time_side_by_side` (warm-up, medians, repeats interleaved so load on the
machine hits both alike). Prints a markdown table of medians and the after/before ratio::

    python scripts/bench_before_after.py --before 2166a8a --T 16384 65536 --repeats 7

``--mode train`` times forward + backward (``out.sum().backward()``) instead of the forward.
"""
from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tutor.bench.runs import Setting, make_inputs  # noqa: E402
from tutor.bench.timing import time_side_by_side  # noqa: E402


def load_before(rev: str, into: Path):
    """``tutor_before``: the ``tutor`` package of commit ``rev``, imported from ``into``."""
    archive = subprocess.run(["git", "archive", rev, "tutor"], cwd=ROOT, check=True, capture_output=True).stdout
    tar_path = into / "before.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    (into / "tutor").rename(into / "tutor_before")
    for py in (into / "tutor_before").rglob("*.py"):        # absolute self-imports point at the copy
        text = py.read_text()
        new = re.sub(r"\b(from|import) tutor\b", r"\1 tutor_before", text)
        if new != text:
            py.write_text(new)
    sys.path.insert(0, str(into))
    return importlib.import_module("tutor_before.attention")


def step(attention, q, k, v, window, gm, backend, train):
    """One call of ``attention.hybrid_attention``; with ``train`` also its backward."""
    if not train:
        with torch.no_grad():
            return attention.hybrid_attention(q, k, v, window, gm, backend=backend)
    qq, kk, vv = (t.detach().requires_grad_() for t in (q, k, v))
    out = attention.hybrid_attention(qq, kk, vv, window, gm, backend=backend)
    out.sum().backward()
    return out.detach()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the older commit (any git revision)")
    ap.add_argument("--T", type=int, nargs="+", default=[16384, 65536])
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--globals", type=int, default=2)
    ap.add_argument("--backend", default="blocked")
    ap.add_argument("--mode", choices=("forward", "train"), default="forward")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    opts = ap.parse_args(argv)
    torch.set_num_threads(opts.threads)
    import tutor.attention as after
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        before = load_before(opts.before, Path(tmp))
        train = opts.mode == "train"
        print(f"{opts.mode}, backend={opts.backend}, B=1, H={opts.heads}, Dh={opts.head_dim}, "
              f"w={opts.window}, G={opts.globals}, float32, {opts.threads} threads, "
              f"median of {opts.repeats} interleaved; before = {opts.before}, after = {head} (+ working tree)\n")
        print("| T | before (ms) | after (ms) | after / before | max abs diff |")
        print("|---|---|---|---|---|")
        for T in opts.T:
            s = Setting(1, opts.heads, T, opts.head_dim, opts.window, opts.globals, "float32", "cpu")
            q, k, v, gm = make_inputs(s)
            fns = {name: (lambda m=mod: step(m, q, k, v, opts.window, gm, opts.backend, train))
                   for name, mod in (("before", before), ("after", after))}
            ms, outs = time_side_by_side(fns, repeats=opts.repeats)
            diff = (outs["before"] - outs["after"]).abs().max().item()
            print(f"| {T} | {ms['before']:.1f} | {ms['after']:.1f} | {ms['after'] / ms['before']:.3f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
