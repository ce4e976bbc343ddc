"""Every hybrid backend on one device against ``dense_attention``: outputs and gradients.

    PYTHONPATH=. python scripts/gpu_check.py --device cuda --json results.json
    python scripts/gpu_check.py --device cpu --quick        # what CI runs: blocked only, small

Needs only torch (and triton for the triton backend): it runs on a bare GPU machine where pytest
and hypothesis may be missing. For each backend that can run here (``why_not`` says why one
cannot), each dtype and each case below, the forward output and dq, dk, dv of
``hybrid_attention(..., backend=...)`` are compared with ``dense_attention`` computed in float32
on the same (rounded) inputs, with TF32 switched off for the reference. The error is scaled by
the reference's largest entry; float32 allows 1e-2 because Triton's ``tl.dot`` may use TF32.
A case that raises is a failure with its error. Then ``auto``'s choice per (dtype, grad) is
printed. Exit status 1 if any comparison failed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tutor.attention import choose_backend, dense_attention, hybrid_attention  # noqa: E402
from tutor.attention.hybrid import BACKENDS  # noqa: E402

#: name: B, H, T, Dh, window, global positions per sequence, tail padding per sequence, causal
CASES = {
    "globals in and out of windows, padding": (2, 2, 300, 64, 16, [(0, 150), (299, 40, 7)], [0, 37], False),
    "causal, T not a tile multiple": (1, 2, 257, 64, 8, [(0, 100)], [0], True),
    "a fully padded sequence": (2, 1, 96, 32, 4, [(5,), (1,)], [0, 96], False),
    "w >= T, no globals": (1, 2, 128, 64, 200, [()], [0], False),
    "every token global, Dh 128": (1, 1, 64, 128, 3, [tuple(range(64))], [0], True),
    "T = 1": (2, 1, 1, 64, 0, [(), (0,)], [0, 0], False),
    "long: T 4096, w 256": (1, 4, 4096, 64, 256, [(0, 2048)], [100], False),
}
QUICK = ("globals in and out of windows, padding", "a fully padded sequence", "T = 1")
FLEX = ("globals in and out of windows, padding", "long: T 4096, w 256")    # each new shape compiles
TOL = {torch.float32: 1e-2, torch.float16: 2e-2, torch.bfloat16: 6e-2}


def inputs(case, device, seed=0):
    B, H, T, Dh, w, globals_, pad, causal = case
    g = torch.Generator().manual_seed(seed)
    q, k, v, d_out = (torch.randn(B, H, T, Dh, generator=g) for _ in range(4))
    gm = torch.zeros(B, T, dtype=torch.bool)
    kpm = torch.zeros(B, T, dtype=torch.bool)
    for b, (pos, n) in enumerate(zip(globals_, pad)):
        gm[b, list(pos)] = True
        if n:
            kpm[b, T - n:] = True
    return [x.to(device) for x in (q, k, v, d_out, gm, kpm)], w, causal


def forward_and_grads(fn, q, k, v, d_out, dtype, **kw):
    """out, dq, dk, dv of fn on (q, k, v) cast to dtype, as float32."""
    q, k, v = (x.to(dtype).requires_grad_() for x in (q, k, v))
    out = fn(q, k, v, **kw)
    grads = torch.autograd.grad(out, (q, k, v), d_out.to(dtype))
    return [t.detach().float() for t in (out, *grads)]


def check(backend, dtype, name, device):
    (q, k, v, d_out, gm, kpm), w, causal = inputs(CASES[name], device)
    q, k, v = (x.to(dtype).float() for x in (q, k, v))          # the reference sees the same rounding
    kw = dict(window=w, global_mask=gm, key_padding_mask=kpm, causal=causal)
    ref = forward_and_grads(dense_attention, q, k, v, d_out.to(dtype).float(), torch.float32, **kw)
    start = time.perf_counter()
    got = forward_and_grads(hybrid_attention, q, k, v, d_out, dtype, backend=backend, **kw)
    seconds = time.perf_counter() - start
    errs = {}
    for part, a, b in zip(("out", "dq", "dk", "dv"), got, ref):
        scale = max(b.abs().max().item(), 1.0)
        errs[part] = float("nan") if not torch.isfinite(a).all() else (a - b).abs().max().item() / scale
    ok = all(e <= TOL[dtype] for e in errs.values())        # NaN compares False: a failure
    return ok, errs, seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help=f"blocked only, float32, cases {QUICK}")
    ap.add_argument("--backends", default=None, help="comma separated (default: every backend)")
    ap.add_argument("--dtypes", default=None, help="comma separated (default: float32,float16,bfloat16)")
    ap.add_argument("--cases", type=int, default=None, help="only the first N cases per backend")
    ap.add_argument("--json", default=None, help="write the results here")
    opts = ap.parse_args(argv)
    device = torch.device(opts.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dtypes = [torch.float32] if opts.quick else [torch.float32, torch.float16, torch.bfloat16]
    if opts.dtypes:
        dtypes = [getattr(torch, d) for d in opts.dtypes.split(",")]
    rows, failed = [], 0
    order = ["blocked", "triton", "flex"]                         # the slowest to compile last
    backends = ["blocked"] if opts.quick else order + [b for b in BACKENDS if b not in order]
    if opts.backends:
        backends = [b for b in backends if b in opts.backends.split(",")]
    for backend in backends:
        probe = torch.empty(1, 1, 8, 64, device=device)
        reason = BACKENDS[backend].why_not(probe, True, False)
        if reason:
            print(f"SKIP {backend}: {reason}", flush=True)
            rows.append(dict(backend=backend, skipped=reason))
            continue
        names = QUICK if opts.quick else (FLEX if backend == "flex" else tuple(CASES))
        names = names[:opts.cases] if opts.cases else names
        for dtype in dtypes if backend != "flex" else [d for d in dtypes if d != torch.float16]:
            for name in names:
                try:
                    ok, errs, seconds = check(backend, dtype, name, device)
                    text = " ".join(f"{p} {e:.1e}" for p, e in errs.items()) + f" ({seconds:.1f} s)"
                except Exception as exc:                       # a crash is a finding, not the end
                    ok, errs, text = False, {}, f"{type(exc).__name__}: {str(exc)[:300]}"
                failed += not ok
                dt = str(dtype).replace("torch.", "")
                print(f"{'PASS' if ok else 'FAIL'} {backend:8s} {dt:9s} {name}: {text}", flush=True)
                rows.append(dict(backend=backend, dtype=dt, case=name, ok=ok, errors=errs, detail=text))
    for dtype in dtypes:
        probe = torch.empty(1, 1, 8, 64, device=device, dtype=dtype)
        for grad in (False, True):
            chosen = choose_backend(probe, "auto", needs_grad=grad).name
            print(f"auto on {device.type}, {str(dtype).replace('torch.', '')}, needs_grad={grad}: {chosen}")
    print(f"{failed} failed of {sum('ok' in r for r in rows)} comparisons")
    if opts.json:
        Path(opts.json).write_text(json.dumps(rows, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
