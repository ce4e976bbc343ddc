"""GPU spec-sheet peaks and the roofline fraction a measured time reaches."""
from __future__ import annotations

from typing import Optional

import torch

from ..costs import hybrid_pairs
from .runs import Setting, global_positions

#: spec-sheet peaks: name fragment -> (dense fp16/bf16 tensor TFLOP/s, fp32 TFLOP/s, memory GB/s)
GPU_PEAKS = {"H200": (989.0, 67.0, 4800.0), "H100 PCIe": (756.0, 51.0, 2000.0), "H100": (989.0, 67.0, 3350.0),
             "A100-SXM4-80GB": (312.0, 19.5, 2039.0), "A100": (312.0, 19.5, 1555.0), "L40S": (362.0, 91.6, 864.0),
             "L4": (121.0, 30.3, 300.0), "A10": (125.0, 31.2, 600.0), "T4": (65.0, 8.1, 320.0),
             "V100": (125.0, 15.7, 900.0), "RTX 4090": (165.0, 82.6, 1008.0)}


def roofline(s: Setting, ms: float, peaks) -> float:
    """Fraction of the roofline bound reached: max(FLOPs/peak, bytes/bandwidth) / time.

    FLOPs: 4 Dh per allowed pair (two matmuls of 2 FLOPs per multiply-add); bytes: q, k, v, out once.
    """
    flops = 4 * s.B * s.H * s.Dh * hybrid_pairs(s.T, s.window, global_positions(s.T, s.G))
    nbytes = 4 * s.B * s.H * s.T * s.Dh * torch.tensor([], dtype=getattr(torch, s.dtype)).element_size()
    tflops = peaks[0] if s.dtype in ("float16", "bfloat16") else peaks[1]
    return max(flops / (tflops * 1e12), nbytes / (peaks[2] * 1e9)) / (ms / 1e3)


def gpu_peaks(opts) -> Optional[tuple]:
    """(half TFLOP/s, float TFLOP/s, GB/s) from ``--peak-tflops/--peak-gbps`` or the table; None if unknown."""
    if opts.peak_tflops and opts.peak_gbps:
        return (opts.peak_tflops, opts.peak_tflops, opts.peak_gbps)
    name = torch.cuda.get_device_name()
    return next((p for key, p in GPU_PEAKS.items() if key in name), None)
