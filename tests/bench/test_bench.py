"""``tutor.bench`` and the figures of ``tutor.viz.blocks``: right columns, sane values, clear errors.

No timing assertions: speed claims live in the benchmark's output (docs/benchmarks/), never in a
timed test on a shared machine.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from tutor import bench
from tutor.viz.blocks import plot_benchmark, plot_query_blocks, plot_roofline, plot_tile_states


def test_global_positions_spread_evenly():
    assert bench.global_positions(16, 0) == []
    assert bench.global_positions(16, 2) == [0, 8]
    assert bench.global_positions(3, 5) == [0, 1, 2]                # G > T: each position once


def test_python_m_tutor_bench_runs_the_package(tmp_path):
    """``python -m tutor.bench`` (the package's __main__) in a fresh interpreter."""
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "tutor.bench", "--T", "0"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "--T" in res.stderr


def test_quick_run_writes_the_csv_and_plot(tmp_path, capsys):
    """A tiny run, in this process (memory in child processes): columns exact, values sane."""
    out, png = tmp_path / "res.csv", tmp_path / "res.png"
    rc = bench.main(["--quick", "--T", "64", "--impls", "dense,unfold,hybrid:blocked",
                     "--csv", str(out), "--plot", str(png)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "hybrid" in printed and "speedup" in printed
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == bench.COLUMNS
        rows = list(reader)
    assert [(r["impl"], r["backend"], int(r["T"])) for r in rows] == [
        ("dense", "sdpa", 64), ("unfold", "torch", 64), ("hybrid", "blocked", 64)]
    for r in rows:
        assert (r["device"], r["dtype"], r["B"], r["H"], r["Dh"], r["window"], r["G"]) == \
            ("cpu", "float32", "1", "2", "16", "8", "2")
        assert float(r["time_ms"]) > 0 and float(r["speedup_vs_dense"]) > 0
        assert 0 <= float(r["peak_mem_mb"]) < 500
        assert float(r["max_err"]) < 1e-5
        if r["impl"] == "dense":
            assert float(r["speedup_vs_dense"]) == 1.0 and float(r["max_err"]) == 0.0
    assert png.stat().st_size > 1000


def test_skips_are_reported_and_leave_empty_cells(tmp_path, capsys):
    out = tmp_path / "res.csv"
    rc = bench.main(["--quick", "--T", "512", "--impls", "dense,hybrid:blocked", "--max-gb", "1e-3",
                     "--mem", "none", "--csv", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "skipped dense at T=512" in printed and "no dense reference" in printed
    rows = list(csv.DictReader(open(out, newline="")))
    assert [r["impl"] for r in rows] == ["hybrid"]              # dense needs ~1.3 MB, blocked less
    assert all(r["speedup_vs_dense"] == "" and r["max_err"] == "" and r["peak_mem_mb"] == "" for r in rows)


@pytest.mark.parametrize("argv, word", [(["--T", "0"], "--T"), (["--window", "-1"], "--window"),
                                        (["--impls", "dense,fast"], "fast"), (["--repeats", "0"], "--repeats")])
def test_bad_options_exit_2_naming_the_option(argv, word, capsys):
    assert bench.main(argv) == 2
    assert word in capsys.readouterr().err


def test_python_m_tutor_bench_forwards():
    from tutor.__main__ import main as tutor_main
    assert tutor_main(["bench", "--T", "0"]) == 2


def test_why_skip_and_estimates():
    s = bench.Setting(1, 4, 131072, 64, 64, 2, "float32", "cpu")
    q = torch.zeros(1, 1, 1, 64)
    assert "GB" in bench.why_skip("dense", s, q, 8.0)          # 5 * T^2 bytes ~ 86 GB
    assert "looped only" in bench.why_skip("looped", s, q, 8.0)
    assert bench.why_skip("hybrid:blocked", s, q, 8.0) is None
    assert "CUDA" in bench.why_skip("hybrid:triton", s, q, 8.0) or "triton" in bench.why_skip("hybrid:triton", s, q, 8.0)


def test_roofline_fraction():
    s = bench.Setting(1, 1, 1024, 64, 0, 0, "float16", "cuda")
    flops = 4 * 64 * 1024                                       # w = 0: one pair per row
    nbytes = 4 * 1024 * 64 * 2
    peaks = (100.0, 10.0, 1000.0)                               # TFLOP/s half, float, GB/s
    want = max(flops / 100e12, nbytes / 1000e9) / 1e-3
    assert math.isclose(bench.roofline(s, 1.0, peaks), want)


def test_plots_return_figures_with_the_data():
    rows = [dict(impl="dense", backend="sdpa", device="cpu", dtype="float32", B=1, H=2, T=T, Dh=16, window=8,
                 G=2, time_ms=T / 10, peak_mem_mb="", speedup_vs_dense=1.0, max_err=0.0) for T in (64, 128)]
    rows.append(dict(rows[0], impl="hybrid", backend="blocked", T=128, time_ms=1.0, peak_mem_mb=2.0))
    fig = plot_benchmark(rows)
    assert isinstance(fig, Figure)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert "dense" in labels and "hybrid:blocked" in labels
    dense_line = fig.axes[0].lines[labels.index("dense")]
    np.testing.assert_allclose(dense_line.get_ydata(), [6.4, 12.8])
    with pytest.raises(ValueError, match="rows"):
        plot_benchmark([])

    fig = plot_roofline(100, 1000, {"a": 1.0, "b": 1000.0})
    ys = {line.get_label().split(":")[0]: line.get_ydata()[0] for line in fig.axes[0].lines[1:]
          if not line.get_label().startswith("_")}
    assert ys == {"a": 1.0, "b": 100.0}                         # 1 FLOP/B * 1 TB/s; capped at peak
    with pytest.raises(ValueError):
        plot_roofline(100, 1000, {"a": 0.0})

    fig = plot_tile_states(np.array([[2, 1, 0], [1, 2, 1], [0, 1, 2]]))
    assert "7 of 9 tiles" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="0/1/2"):
        plot_tile_states(np.array([[3]]))

    fig = plot_query_blocks(16, 2, 4, [5])
    assert len(fig.axes[0].patches) >= 2 * 4                    # a needed and a scored span per block
    with pytest.raises(ValueError, match="block"):
        plot_query_blocks(16, 2, 0)


def test_time_side_by_side_warms_up_interleaves_and_returns_medians():
    calls = []
    fns = {"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2}
    ms, outs = bench.time_side_by_side(fns, "cpu", repeats=3, warmup={"a": 2, "b": 0})
    assert calls == ["a", "a", "a", "b", "a", "b", "a", "b"]          # warm-up first, then interleaved
    assert outs == {"a": 1, "b": 2} and set(ms) == {"a", "b"} and all(t >= 0 for t in ms.values())
    calls.clear()
    bench.time_side_by_side(fns, torch.device("cpu"), repeats=1)    # defaults: one warm-up each
    assert calls == ["a", "b", "a", "b"]
    with pytest.raises(ValueError, match="repeats"):
        bench.time_side_by_side(fns, "cpu", repeats=0)


def test_load_benchmarks_reads_the_stored_results_by_name():
    rows = bench.load_benchmarks("cpu.csv")                         # a bare name: docs/benchmarks/cpu.csv
    same = bench.load_benchmarks([bench.BENCH_DIR / "cpu.csv"])
    assert rows and [(r["impl"], r["backend"], r["T"], r["time_ms"]) for r in rows] == \
        [(r["impl"], r["backend"], r["T"], r["time_ms"]) for r in same]
    assert {r["impl"] for r in rows} >= {"dense", "hybrid"} and all(isinstance(r["T"], float) for r in rows)
    assert len(bench.load_benchmarks()) >= len(rows)                # default: every CSV of the folder


# --------------------------------------------------------------------------- --mode train
def test_train_mode_times_forward_and_backward_side_by_side(tmp_path, capsys):
    """Tiny shapes: the three training rows, gradients equal dense, memory from child processes."""
    out = tmp_path / "train.csv"
    rc = bench.main(["--mode", "train", "--quick", "--T", "40", "--globals", "3", "--csv", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "T=40 blocked:lean: forward" in printed and "backward" in printed
    rows = list(csv.DictReader(open(out, newline="")))
    assert [(r["impl"], r["backend"], int(r["T"])) for r in rows] == [
        ("dense", "sdpa", 40), ("blocked", "autograd", 40), ("blocked", "lean", 40)]
    for r in rows:
        assert float(r["time_ms"]) > 0 and 0 <= float(r["peak_mem_mb"]) < 500
        assert float(r["max_err"]) < 1e-5                      # out, dq, dk, dv all equal dense


def test_train_step_returns_the_dense_gradients_and_lean_keeps_less():
    from tutor.bench.train import train_runners
    s = bench.Setting(1, 2, 96, 8, 5, 2, "float32", "cpu")
    q, k, v, gm = bench.make_inputs(s)
    steps = {impl: train_runners(impl, s, q, k, v, gm)[1]() for impl in ("dense", "blocked:autograd", "blocked:lean")}
    for impl in ("blocked:autograd", "blocked:lean"):
        for got, want in zip(steps[impl], steps["dense"]):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    forward, _ = train_runners("blocked:lean", s, q, k, v, gm)
    assert type(forward().grad_fn).__name__ == "LeanBlockedAttentionBackward"
    assert not q.requires_grad                                 # the caller's tensors are left alone


def test_saved_tensors_counts_each_storage_once_and_leaves_out_the_inputs():
    x = torch.randn(10, 3, requires_grad=True)
    assert bench.saved_tensors(lambda x: (x * x).sum(), x) == {}                 # mul saves only x itself
    kept = bench.saved_tensors(lambda x: (x.exp()[:5] * x.exp()[:5].detach()).sum(), x)
    assert sorted(kept.values()) == [(torch.float32, 120)] * 2                     # two exp results, 30 floats each
    y = x.exp()
    assert bench.saved_bytes(lambda y: (y[:4] * y[4:8]).sum() + y.sin().sum(), y) == 0   # views of an input
    assert bench.saved_bytes(lambda x: x.exp().sum(), x) == 120


def test_train_mode_runs_hybrid_backends_where_they_can_train(tmp_path, capsys):
    """hybrid:auto trains (blocked's lean path on CPU); flex and triton say why they cannot here."""
    out = tmp_path / "train.csv"
    rc = bench.main(["--mode", "train", "--device", "cpu", "--T", "48", "--window", "4", "--heads", "2",
                     "--head-dim", "8", "--repeats", "1", "--mem", "none", "--csv", str(out),
                     "--impls", "dense,hybrid:auto,hybrid:flex,hybrid:triton,flex_mask"])
    assert rc == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(open(out, newline="")))
    assert [(r["impl"], r["backend"]) for r in rows] == [("dense", "sdpa"), ("hybrid", "auto:blocked")]
    assert float(rows[1]["max_err"]) < 1e-5
    for impl in ("hybrid:flex", "hybrid:triton", "flex_mask"):
        assert f"skipped {impl} at T=48: " in printed


def test_gpu_check_script_runs_on_cpu(tmp_path):
    """scripts/gpu_check.sh without CUDA: the CPU correctness check passes, the CUDA steps are skipped."""
    import json
    import subprocess
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(["bash", str(root / "scripts" / "gpu_check.sh")], cwd=root, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no CUDA GPU: the CUDA steps are skipped" in done.stdout
    assert "0 failed of 3 comparisons" in (tmp_path / "check.log").read_text()
    rows = json.loads((tmp_path / "check.json").read_text())
    assert len(rows) == 3 and all(r["ok"] and r["backend"] == "blocked" for r in rows)


def test_train_mode_skips_and_rejects_forward_impls(capsys):
    assert bench.main(["--mode", "train", "--impls", "hybrid:blocked", "--T", "64"]) == 2
    assert "hybrid:blocked" in capsys.readouterr().err
    rc = bench.main(["--mode", "train", "--quick", "--T", "512", "--max-gb", "1e-3", "--mem", "none"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "skipped dense at T=512" in printed and "no dense reference" in printed
