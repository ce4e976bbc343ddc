"""The exercise checkers are tested like learntools tests its own: for every question the reference
and the stored solution pass, an untouched placeholder is "not attempted", and planted wrong
answers (classic mistakes, plus raising, NaN, mutating, hanging, wrong dtype/device/type answers,
and answers that just call tutor's own implementation) come back "incorrect" with a message."""
from __future__ import annotations

import importlib
from pathlib import Path
import threading
import time

import pytest
from exercise_helpers import solved
import torch

import tutor.attention as att
from tutor import exercises
from tutor.exercises import ____, problem, sandbox

FUNCTION_QUESTIONS = [q for q in exercises.questions() if isinstance(q, exercises.FunctionProblem)]
TENSOR_QUESTIONS = [q for q in FUNCTION_QUESTIONS if q._compare.__name__ in
                    ("compare_attention", "compare_pairs", "compare_windows", "compare_tensor")]
ATTENTION_QUESTIONS = [q for q in FUNCTION_QUESTIONS if q._compare.__name__ == "compare_attention"]


def status(qid: str, answer) -> str:
    return exercises.question(qid).check(answer).status


# --------------------------------------------------------------------------- the API
QUESTIONS_PER_NOTEBOOK = {"00": 3, "01": 4, "02": 3, "03": 5, "04": 4, "05": 3, "06": 3, "07": 4, "08": 3, "09": 3, "10": 4}


def test_questions_ids_order_and_counts():
    ids = [q.id for q in exercises.questions()]
    assert len(ids) == len(set(ids)) >= 15
    assert ids == sorted(ids, key=lambda s: (s[:2], int(s.split(".q")[1])))
    per_notebook = exercises.notebook_questions()
    assert list(per_notebook) == sorted(QUESTIONS_PER_NOTEBOOK)                  # in course order
    assert {nb: [q.id for q in qs] for nb, qs in per_notebook.items()} == {
        nb: [f"{nb}.q{k}" for k in range(1, n + 1)] for nb, n in QUESTIONS_PER_NOTEBOOK.items()}
    q = exercises.question("03.q2")
    assert q.id == "03.q2" and callable(q.reference)
    with pytest.raises(ValueError, match="03.q2"):
        exercises.question("09.q9")
    with pytest.raises(TypeError, match="qid"):
        exercises.question(3)


@pytest.mark.parametrize("q", list(exercises.questions()), ids=lambda q: q.id)
def test_reference_solution_and_placeholder(q):
    assert q._check_trusted(q.reference).status == "correct"
    assert q.check(None).status == "not_attempted"
    assert q.check(____).status == "not_attempted"
    ns = {"torch": torch, "____": ____}
    exec(q.stub, ns)
    assert q.check(ns[q.answer_name]).status == "not_attempted"
    if isinstance(q, exercises.FunctionProblem):
        fn, _ = solved(q.id)
        result = q.check(fn)
    else:
        ns = {}
        exec(q.solution_code, ns)
        result = q.check(ns[q.answer_name])
    assert result.status == "correct", result.message
    assert result.message and result.question == q.id


def test_function_returning_none_and_not_a_function():
    assert status("00.q1", lambda T, window: None) == "not_attempted"
    r = exercises.question("00.q1").check(3)
    assert r.status == "incorrect" and "without parentheses" in r.message


def test_hints_and_solution_are_shown(capsys):
    q = exercises.question("03.q4")
    q.hint()
    q.hint(2)
    q.hint(99)                                  # past the last: shows the last one
    q.solution()
    out = capsys.readouterr().out
    assert "Hint 1/3" in out and "Hint 2/3" in out and out.count("Hint 3/3") == 1
    assert "def unfold_hybrid_attention" in out


def test_feedback_shows_once_per_cell_in_a_notebook(monkeypatch):
    from tutor.exercises import feedback
    shown = []
    shell = type("Shell", (), {"kernel": object(), "execution_count": 7})()
    monkeypatch.setattr(feedback, "_in_kernel", lambda: shell)
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    r = exercises.question("00.q3").check(768)
    assert len(shown) == 1 and "**Correct**" in shown[0]["text/markdown"] and "00.q3" in shown[0]["text/plain"]
    r._ipython_display_()                       # the cell's own displayhook: nothing more
    assert len(shown) == 1
    shell.execution_count = 8                   # `r` evaluated again in a later cell
    r._ipython_display_()
    assert len(shown) == 2


def test_a_checker_bug_is_reported_not_raised(monkeypatch):
    q = exercises.question("00.q1")

    def broken_compare(got, expected, case):
        raise RuntimeError("checker bug")
    monkeypatch.setattr(type(q), "_compare", broken_compare)
    r = q._check_trusted(q.reference)
    assert r.status == "incorrect" and "checker could not judge" in r.message


def test_messages_never_show_the_expected_value():
    r = exercises.question("00.q2").check(lambda T, window: T * (2 * window + 1))
    assert r.status == "incorrect" and "50" in r.message and "46" not in r.message
    r = exercises.question("00.q2").check(lambda T, window: float(_count_local(T, window)))
    assert r.status == "incorrect" and "46" not in r.message and "float" in r.message
    r = exercises.question("00.q3").check(700)
    assert r.status == "incorrect" and "768" not in r.message


def test_a_tensor_count_is_not_an_int():
    r = exercises.question("00.q2").check(lambda T, window: _local(T, window).sum())
    assert r.status == "incorrect" and "0-d torch.Tensor" in r.message and "int(" in r.message


def test_every_row_wrong_points_at_the_scale_not_an_edge():
    r = exercises.question("01.q4").check(WRONG["01.q4"]["missing 1/sqrt(Dh)"])
    assert "every output row differs" in r.message and "1/sqrt(Dh)" in r.message
    assert "near an edge" not in r.message
    r = exercises.question("03.q4").check(WRONG["03.q4"]["missing 1/sqrt(Dh)"])
    assert "every output row differs" in r.message


def test_near_an_edge_only_for_rows_whose_window_is_cut():
    from tutor.exercises.cases import AttnCase
    case = AttnCase("c", T=10, window=2)
    assert [i for i in range(10) if "near an edge" in case.describe_query(0, i)] == [0, 1, 8, 9]
    wide = AttnCase("c", T=7, window=9)                        # every window is cut: the word says nothing
    assert not any("near an edge" in wide.describe_query(0, i) for i in range(7))


def test_softmax_nan_is_traced_to_its_cause():
    r = exercises.question("01.q3").check(WRONG["01.q3"]["exp without the max"])
    assert "HAS allowed keys" in r.message and "overflow" in r.message
    r = exercises.question("01.q3").check(WRONG["01.q3"]["NaN on empty rows"])
    assert "no allowed key" in r.message and "HAS" not in r.message


def test_the_float16_claim_is_a_case_that_runs():
    q = exercises.question("01.q3")
    assert "float16" in q._congrats
    assert any(c.tensors()["scores"].dtype == torch.float16 for c in q._cases)


def test_a_python_loop_over_T_is_named():
    r = exercises.question("03.q5").check(WRONG["03.q5"]["a Python loop over i and r"])
    assert r.status == "incorrect" and "loops over the sequence in Python" in r.message


def test_no_loop_is_claimed_only_when_lines_were_counted():
    fn, _ = solved("03.q5")
    r = exercises.question("03.q5").check(fn)
    assert r.status == "correct" and "No Python loop over T" in r.message
    from tutor.exercises.loops import loop_over_T
    q = exercises.question("03.q5")
    from tutor.exercises.cases import AttnCase
    args = lambda T: tuple(q._arguments(AttnCase("p", T=T, window=2)).values())  # noqa: E731
    assert loop_over_T(q.reference, args) == (None, [0, 0])         # tutor's own code: nothing to claim


def test_blocked_answer_that_builds_T_by_T_scores_is_named():
    r = exercises.question("04.q3").check(WRONG["04.q3"]["right numbers from the full (T, T) scores"])
    assert r.status == "incorrect" and "memory probe" in r.message and "block by block" in r.message
    fn, _ = solved("04.q3")
    r = exercises.question("04.q3").check(fn)
    assert r.status == "correct" and "largest tensor held" in r.message


def test_unstable_sorts_fail_on_long_cases():
    q = exercises.question("03.q3")
    assert any(c.T >= 32 and max(map(len, c.globals_)) >= 4 for c in q._cases)
    r = q.check(WRONG["03.q3"]["unstable argsort"])
    assert "not in position order" in r.message and "stable=True" in r.message
    r = q.check(WRONG["03.q3"]["first sequence's globals for all"])
    assert "not in position order" not in r.message


# --------------------------------------------------------------------------- generic failure modes
@pytest.mark.parametrize("q", FUNCTION_QUESTIONS, ids=lambda q: q.id)
def test_raising_answer_is_incorrect_and_named(q):
    def boom(*args):
        raise ValueError("boom at index 3")
    r = q.check(boom)
    assert r.status == "incorrect" and "ValueError: boom at index 3" in r.message and "case" in r.message


@pytest.mark.parametrize("q", FUNCTION_QUESTIONS, ids=lambda q: q.id)
def test_hanging_answer_is_stopped_fast(q, monkeypatch):
    monkeypatch.setattr(problem, "TIME_LIMIT", 0.3)

    def hang(*args):
        while True:
            pass
    start = time.perf_counter()
    r = q.check(hang)
    assert r.status == "incorrect" and "did not finish within 0.3 s" in r.message
    assert time.perf_counter() - start < 3.0


@pytest.mark.parametrize("q", FUNCTION_QUESTIONS, ids=lambda q: q.id)
def test_answer_calling_the_reference_is_caught(q):
    r = q.check(lambda *args: q.reference(*args))
    assert r.status == "incorrect" and "calls `" in r.message


@pytest.mark.parametrize("q", ATTENTION_QUESTIONS, ids=lambda q: q.id)
def test_answer_calling_any_tutor_attention_is_caught(q):
    def via_sparse(q_, k, v, window, global_mask=None, *rest):
        return att.sparse_attention(q_, k, v, window, global_mask, impl="dense")
    r = q.check(via_sparse)
    assert r.status == "incorrect" and ("dense_attention" in r.message or "sparse_attention" in r.message)


def _has_tensor_input(q) -> bool:
    return any(isinstance(a, torch.Tensor) for a in q._arguments(q._cases[0]).values())


def _break(out, mistake: str):
    if isinstance(out, tuple):                  # (x_g, valid): break the first part
        return (_break(out[0], mistake),) + out[1:]
    return {"nan": lambda: torch.full_like(out, float("nan")), "float64": lambda: out.double(),
            "meta": lambda: out.to("meta"), "numpy": lambda: out.numpy(),
            "list": lambda: out.tolist()}[mistake]()


@pytest.mark.parametrize("q", TENSOR_QUESTIONS, ids=lambda q: q.id)
@pytest.mark.parametrize("mistake, words", [("nan", "NaN"), ("float64", "dtype"), ("meta", "device"),
                                            ("numpy", "torch.Tensor"), ("list", "torch.Tensor"),
                                            ("mutate", "in place")])
def test_broken_tensor_answers(q, mistake, words):
    fn, _ = solved(q.id)
    first = fn(*q._arguments(q._cases[0]).values())
    first = first[0] if isinstance(first, tuple) else first
    if mistake == "nan" and not first.is_floating_point():
        pytest.skip("a bool result cannot hold NaN")
    if mistake == "mutate" and not _has_tensor_input(q):
        pytest.skip("no tensor input to modify")

    def broken(*args):
        out = fn(*args)
        if mistake != "mutate":
            return _break(out, mistake)
        t = next(a for a in args if isinstance(a, torch.Tensor))
        t.logical_not_() if t.dtype == torch.bool else t.add_(1)
        return out
    r = q.check(broken)
    assert r.status == "incorrect" and words in r.message, r.message


def test_time_limit_in_a_worker_thread():
    """Off the main thread (no SIGALRM) the check still stops a Python loop."""
    results = []

    def hang(T, window):
        while True:
            pass

    def run():
        results.append(sandbox.call_with_limit(hang, (3, 1), 0.3))
    t = threading.Thread(target=run)
    t.start()
    t.join(5)
    assert not t.is_alive()
    value, error = results[0]
    assert value is None and isinstance(error, sandbox.TimeLimitExceeded)


def test_time_limit_leaves_no_timer_armed():
    import signal
    value, error = sandbox.call_with_limit(lambda: 7, (), 0.5)
    assert (value, error) == (7, None)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_learner_except_exception_cannot_swallow_the_time_limit(monkeypatch):
    monkeypatch.setattr(problem, "TIME_LIMIT", 0.3)

    def stubborn(T, window):
        while True:
            try:
                while True:
                    pass
            except Exception:
                pass
    assert status("00.q1", stubborn) == "incorrect"


# --------------------------------------------------------------------------- classic wrong answers
def _ij(T):
    return torch.arange(T)[:, None], torch.arange(T)[None, :]       # (T, 1), (1, T)


def _local(T, window, off=0):
    i, j = _ij(T)
    return (i - j).abs() <= window + off                              # (T, T)


def _hybrid(T, window, gm, rows=True, cols=True, off=0, first_only=False):
    g = gm[:1].expand_as(gm) if first_only else gm
    m = _local(T, window, off)[None].expand(gm.shape[0], T, T)
    if rows:
        m = m | g[:, :, None]
    if cols:
        m = m | g[:, None, :]
    return m                                                          # (B, T, T)


def _count_local(T, w):
    w = min(w, T - 1)
    return T * (2 * w + 1) - w * (w + 1)


def _softmax(scores, allowed, mode):
    if mode == "nan":
        return torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1)
    if mode == "big_negative":
        return torch.softmax(scores.masked_fill(~allowed, -1e9), -1)
    if mode == "big_negative_zeroed":
        return torch.softmax(scores.masked_fill(~allowed, -1e9), -1) * allowed.any(-1, keepdim=True)
    if mode == "post_mask":
        return torch.softmax(scores, -1) * allowed
    if mode == "naive_exp":
        e = torch.exp(scores) * allowed
        return e / e.sum(-1, keepdim=True).clamp_min(1e-30)
    p = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1)
    return torch.where(allowed.any(-1, keepdim=True), p, torch.zeros_like(p))


def _dense(q, k, v, window, gm, pm=None, scale=True, pad=True, softmax="safe", rows=True, cols=True, off=0):
    T, Dh = q.shape[-2], q.shape[-1]
    allowed = _hybrid(T, window, gm, rows, cols, off)
    if pm is not None and pad:
        allowed = allowed & ~pm[:, None, :] & ~pm[:, :, None]
    s = q @ k.transpose(-1, -2) / (Dh ** 0.5 if scale else 1.0)       # (B, H, T, T)
    return _softmax(s, allowed[:, None], softmax) @ v


def _keys(i, T, w, g, global_row=True, dedup=True, off=0, clip=True, order=True):
    if global_row and g[i]:
        return list(range(T))
    lo, hi = (max(0, i - w), min(T, i + w + 1 + off)) if clip else (i - w, i + w + 1 + off)
    keys = list(range(lo, hi)) + [j for j in range(T) if g[j]]
    keys = sorted(set(keys)) if dedup else sorted(keys)
    return keys if order else keys[::-1]


def _looped(q, k, v, w, gm, scale=True, **key_flags):
    B, H, T, Dh = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for i in range(T):
            keys = torch.tensor(_keys(i, T, w, gm[b].tolist(), **key_flags))
            s = (k[b, :, keys] @ q[b, :, i, :, None])[..., 0] / (Dh ** 0.5 if scale else 1.0)
            out[b, :, i] = (torch.softmax(s, -1)[:, None, :] @ v[b, :, keys])[:, 0]
    return out


def _causal_keys(i, T, w, g, mode):
    if mode == "not_causal":
        return _keys(i, T, w, g)
    if mode == "global_row_reads_future":
        return list(range(T)) if g[i] else [j for j in _keys(i, T, w, g) if j <= i]
    if mode == "reads_future_globals":
        return sorted({j for j in range(max(0, i - w), i + 1)} | {j for j in range(T) if g[j]}
                      | (set(range(i + 1)) if g[i] else set()))
    return [j for j in _keys(i, T, w, g) if j <= i and (i - j < w or g[i] or g[j])]  # off by one


def _edge(T, w, mode):
    i = torch.arange(T)[:, None]
    r = torch.arange(2 * w + (0 if mode == "short" else 1))[None, :]
    j = i - w + r
    if mode == "all_true":
        return torch.ones(T, 2 * w + 1, dtype=torch.bool)
    if mode == "le_T":
        return (j >= 0) & (j <= T)
    if mode == "gt_0":
        return (j > 0) & (j < T)
    return (j >= 0) & (j < T)


def _unfold_hybrid(q, k, v, w, gm=None, dedup=True, rows=True, valid_mask=True, edge=True, scale=True):
    from tutor.attention.softmax import masked_softmax
    from tutor.attention.global_tokens import gather_tokens, global_index
    from tutor.attention.unfold import unfold_windows
    B, H, T, Dh = q.shape
    gm = torch.zeros(B, T, dtype=torch.bool) if gm is None else gm
    sc = Dh ** -0.5 if scale else 1.0
    s_loc = torch.einsum("bhtd,bhtrd->bhtr", q, unfold_windows(k, w)) * sc        # (B, H, T, 2w+1)
    ok_loc = _edge(T, w, "ok" if edge else "all_true")[None].expand(B, -1, -1)
    if dedup:
        ok_loc = ok_loc & ~unfold_windows(gm, w, False)
    idx, valid = global_index(gm)
    s_glob = q @ gather_tokens(k, idx).transpose(-1, -2) * sc                       # (B, H, T, G)
    ok_glob = (valid if valid_mask else torch.ones_like(valid))[:, None, :].expand(B, T, -1)
    p = masked_softmax(torch.cat([s_loc, s_glob], -1), torch.cat([ok_loc, ok_glob], -1)[:, None])
    p_loc, p_glob = p.split([2 * w + 1, idx.shape[1]], -1)
    out = torch.einsum("bhtr,bhtrd->bhtd", p_loc, unfold_windows(v, w)) + p_glob @ gather_tokens(v, idx)
    if rows:
        for b in range(B):
            pos = gm[b].nonzero().flatten()
            out[b, :, pos] = torch.softmax(q[b, :, pos] @ k[b].transpose(-1, -2) * sc, -1) @ v[b]
    return out


def _scatter_map(p_loc, p_glob, idx, w, mode):
    B, H, T, R = p_loc.shape
    shift = 1 if mode == "offset" else 0
    cols = (torch.arange(T)[:, None] - w + shift + torch.arange(R)[None, :]).clamp(0, T - 1)
    attn = torch.zeros(B, H, T, T)
    put = attn.scatter if mode == "scatter" else attn.scatter_add
    attn = put(3, cols.expand(B, H, T, R), p_loc)
    if mode != "no_globals":
        put = attn.scatter if mode == "scatter" else attn.scatter_add
        attn = put(3, idx[:, None, None, :].expand(B, H, T, idx.shape[1]), p_glob)
    return attn.transpose(-1, -2) if mode == "transposed" else attn


def _gather_by(x, gm, order_of):
    """03.q3 with the order of the global positions taken from ``order_of(gm)`` (B, T)."""
    B, H, T, D = x.shape
    counts = gm.sum(1)
    G = int(counts.max())
    idx = order_of(gm)[:, :G]                                         # (B, G)
    valid = torch.arange(G)[None, :] < counts[:, None]
    return x.gather(2, idx[:, None, :, None].expand(B, H, G, D)), valid


def _scatter_map_looped(p_loc, p_glob, idx, w):
    """Right numbers, but a Python loop over every query and slot (what 03.q5 forbids)."""
    B, H, T, R = p_loc.shape
    attn = torch.zeros(B, H, T, T)
    for i in range(T):
        for r in range(R):
            if 0 <= i - w + r < T:
                attn[:, :, i, i - w + r] += p_loc[:, :, i, r]
    return attn.scatter_add(3, idx[:, None, None, :].expand(B, H, T, idx.shape[1]), p_glob)


def _local_looped(q, k, v, w):
    """Right numbers, one query at a time (what 03.q2 forbids)."""
    out = torch.zeros_like(q)
    T = q.shape[2]
    for i in range(T):
        lo, hi = max(0, i - w), min(T, i + w + 1)
        s = q[:, :, i:i + 1] @ k[:, :, lo:hi].transpose(-1, -2) / q.shape[-1] ** 0.5    # (B, H, 1, n)
        out[:, :, i:i + 1] = torch.softmax(s, -1) @ v[:, :, lo:hi]
    return out


def _blocked(q, k, v, w, gm, b, full_blocks_only=False, **flags):
    out = _unfold_hybrid(q, k, v, w, gm, **flags)
    if full_blocks_only:                         # forgot the last, partial block
        out = out.clone()
        out[:, :, (q.shape[2] // b) * b:] = 0
    return out


WRONG = {
    "00.q1": {"off-by-one window": lambda T, w: _local(T, w, -1),
              "one-sided window": lambda T, w: (_ij(T)[0] - _ij(T)[1]) <= w,
              "int mask": lambda T, w: _local(T, w).long(),
              "extra batch axis": lambda T, w: _local(T, w)[None]},
    "00.q2": {"ignores the edges": lambda T, w: T * (2 * w + 1),
              "closed form without clamping w": lambda T, w: T * (2 * w + 1) - w * (w + 1),
              "float count": lambda T, w: float(_count_local(T, w)),
              "edges counted once": lambda T, w: T * (2 * w + 1) - w * w,
              "a 0-d tensor": lambda T, w: _local(T, w).sum()},
    "01.q1": {"global rows read only their window": lambda T, w, gm: _hybrid(T, w, gm, rows=False),
              "global keys not read by everyone": lambda T, w, gm: _hybrid(T, w, gm, cols=False),
              "off-by-one window": lambda T, w, gm: _hybrid(T, w, gm, off=-1),
              "first sequence's globals for all": lambda T, w, gm: _hybrid(T, w, gm, first_only=True)},
    "01.q2": {"global pairs counted twice": lambda T, w, g: _count_local(T, w) + 2 * len(g) * T,
              "window overlap counted twice": lambda T, w, g: _count_local(T, w) + len(g) * (2 * T - 1),
              "globals ignored": lambda T, w, g: _count_local(T, w),
              "off-by-one window": lambda T, w, g: sum(1 for i in range(T) for j in range(T)
                                                       if abs(i - j) < w or i in g or j in g)},
    "01.q3": {"NaN on empty rows": lambda s, a: _softmax(s, a, "nan"),
              "-1e9 instead of -inf": lambda s, a: _softmax(s, a, "big_negative"),
              "mask after the softmax": lambda s, a: _softmax(s, a, "post_mask"),
              "exp without the max": lambda s, a: _softmax(s, a, "naive_exp"),
              "-1e9 fill, empty rows zeroed (breaks in float16)": lambda s, a: _softmax(s, a, "big_negative_zeroed")},
    "01.q4": {"missing 1/sqrt(Dh)": lambda *a: _dense(*a, scale=False),
              "padding ignored": lambda *a: _dense(*a, pad=False),
              "-1e9 on fully padded rows": lambda *a: _dense(*a, softmax="big_negative"),
              "global rows read only their window": lambda *a: _dense(*a, rows=False),
              "off-by-one window": lambda *a: _dense(*a, off=-1)},
    "02.q1": {"global row reads only its window": lambda i, T, w, g: _keys(i, T, w, g, global_row=False),
              "global key in the window listed twice": lambda i, T, w, g: _keys(i, T, w, g, dedup=False),
              "off-by-one window": lambda i, T, w, g: _keys(i, T, w, g, off=-1),
              "window not clipped at the edges": lambda i, T, w, g: _keys(i, T, w, g, clip=False),
              "not sorted": lambda i, T, w, g: _keys(i, T, w, g, order=False)},
    "02.q2": {"missing 1/sqrt(Dh)": lambda *a: _looped(*a, scale=False),
              "global rows read only their window": lambda *a: _looped(*a, global_row=False),
              "global keys counted twice": lambda *a: _looped(*a, dedup=False),
              "off-by-one window": lambda *a: _looped(*a, off=-1)},
    "02.q3": {mode: (lambda m: lambda i, T, w, g: _causal_keys(i, T, w, g, m))(mode) for mode in
              ("not_causal", "global_row_reads_future", "reads_future_globals", "off_by_one")},
    "03.q1": {mode: (lambda m: lambda T, w: _edge(T, w, m))(mode) for mode in ("all_true", "le_T", "gt_0", "short")},
    "03.q3": {"every slot valid": lambda x, gm: (solved("03.q3")[0](x, gm)[0], torch.ones(gm.shape[0], int(gm.sum(1).max()), dtype=torch.bool)),
              "globals of the whole batch": lambda x, gm: (x[:, :, gm.any(0)], gm[:, gm.any(0)]),
              "first sequence's globals for all": lambda x, gm: solved("03.q3")[0](x, gm[:1].expand_as(gm)),
              "only x_g returned": lambda x, gm: solved("03.q3")[0](x, gm)[0],
              "unstable argsort": lambda x, gm: _gather_by(x, gm, lambda m: torch.argsort((~m).int(), dim=1)),
              "topk of the mask": lambda x, gm: _gather_by(x, gm, lambda m: torch.topk(m.int(), m.shape[1], dim=1).indices)},
    "03.q4": {"global key in the window counted twice": lambda *a: _unfold_hybrid(*a, dedup=False),
              "global rows read only their window": lambda *a: _unfold_hybrid(*a, rows=False),
              "padded global slots scored": lambda *a: _unfold_hybrid(*a, valid_mask=False),
              "unmasked zero-padded edges": lambda *a: _unfold_hybrid(*a, edge=False),
              "missing 1/sqrt(Dh)": lambda *a: _unfold_hybrid(*a, scale=False)},
    "03.q5": {**{mode: (lambda m: lambda *a: _scatter_map(*a, m))(mode) for mode in
                 ("scatter", "no_globals", "offset", "transposed")},
              "a Python loop over i and r": lambda *a: _scatter_map_looped(*a)},
    "03.q2": {"unmasked zero-padded edges": lambda q, k, v, w: _unfold_hybrid(q, k, v, w, edge=False),
              "missing 1/sqrt(Dh)": lambda q, k, v, w: _unfold_hybrid(q, k, v, w, scale=False),
              "window one too small": lambda q, k, v, w: _unfold_hybrid(q, k, v, max(w - 1, 0)),
              "a Python loop over the queries": lambda q, k, v, w: _local_looped(q, k, v, w)},
    "04.q1": {"inclusive stop": lambda n, b, w, T: (max(0, n * b - w), min(T, n * b + b + w) - 1),
              "not clipped": lambda n, b, w, T: (n * b - w, n * b + b + w),
              "span starts at the block": lambda n, b, w, T: (n * b, min(T, n * b + b + 2 * w)),
              "a list of keys": lambda n, b, w, T: list(range(max(0, n * b - w), min(T, n * b + b + w)))},
    "04.q2": {"causal ignored": lambda b, w, c: solved("04.q2")[0](b, w, False),
              "no offset w": lambda b, w, c: (torch.arange(b)[:, None] - torch.arange(b + 2 * w)[None]).abs() <= w,
              "span of b + w": lambda b, w, c: solved("04.q2")[0](b, w, c)[:, : b + w],
              "causal reversed": lambda b, w, c: solved("04.q2")[0](b, w, False) & (
                  (torch.arange(b)[:, None] - torch.arange(b + 2 * w)[None] + w) <= 0 if c else True)},
    "04.q3": {"global rows read only their window": lambda *a: _blocked(*a, rows=False),
              "global key in the span counted twice": lambda *a: _blocked(*a, dedup=False),
              "unmasked zero-padded edges": lambda *a: _blocked(*a, edge=False),
              "last partial block forgotten": lambda *a: _blocked(*a, full_blocks_only=True),
              "missing 1/sqrt(Dh)": lambda *a: _blocked(*a, scale=False),
              "right numbers from the full (T, T) scores": lambda q, k, v, w, gm, b: _dense(q, k, v, w, gm)},
    "04.q4": {"last block not padded": lambda B, H, T, w, b, G: B * H * (T * (b + 2 * w + G) + G * T),
              "global rows forgotten": lambda B, H, T, w, b, G: B * H * -(-T // b) * b * (b + 2 * w + G),
              "global columns forgotten": lambda B, H, T, w, b, G: B * H * (-(-T // b) * b * (b + 2 * w) + G * T),
              "span of b + w": lambda B, H, T, w, b, G: B * H * (-(-T // b) * b * (b + w + G) + G * T)},
}
from test_exercises_05_06 import WRONG as WRONG_05_06  # noqa: E402  (the pattern zoo and training questions)

WRONG.update(WRONG_05_06)
WRONG_VALUES = {"00.q3": {"MB instead of MiB": 805.306368, "elements, not bytes": 192, "one head": 64,
                          "a guess": 700, "a string": "768"}}


def _wrong_tables_of_later_notebooks() -> dict:
    """The WRONG tables that tests/exercises/test_exercises_NN.py keep for their own notebook's questions."""
    tables = {}
    for path in sorted(Path(__file__).parent.glob("test_exercises_*.py")):
        module = importlib.import_module(path.stem)
        tables.update(getattr(module, "WRONG", {}))
    return tables


def test_every_function_question_has_wrong_answers():
    assert set(WRONG) | set(_wrong_tables_of_later_notebooks()) == {q.id for q in FUNCTION_QUESTIONS}
    assert all(len(v) >= 3 for v in WRONG.values()) and all(len(v) >= 3 for v in WRONG_VALUES.values())


@pytest.mark.parametrize("qid, label", [(qid, label) for qid, d in {**WRONG, **WRONG_VALUES}.items() for label in d])
def test_classic_wrong_answer_is_incorrect(qid, label):
    answer = {**WRONG, **WRONG_VALUES}[qid][label]
    r = exercises.question(qid).check(answer)
    assert r.status == "incorrect", f"{qid} accepted the wrong answer '{label}'"
    assert "case '" in r.message or qid == "00.q3"


# --------------------------------------------------------------------------- the notebooks
def _committed(root: Path, relpath: str):
    """The notebook at ``relpath`` as committed (git HEAD), not as a learner's answers left it on disk."""
    import subprocess
    import nbformat
    try:
        text = subprocess.run(["git", "-C", str(root), "show", f"HEAD:{relpath}"], check=True,
                              capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (or the notebook is not committed): nothing committed to compare with")
    return nbformat.reads(text, as_version=4)


@pytest.mark.parametrize("module", exercises.MODULES)
def test_notebooks_match_the_question_data(module):
    """exercises/ and solutions/ are written from the question data: no drift, stored checks all correct.

    Compares the *committed* notebooks (git HEAD), so a learner who writes answers into exercises/
    never makes this test fail; outside a git checkout it is skipped.
    """
    from tutor.exercises.authoring import build_notebook
    root = Path(__file__).resolve().parents[2]
    name = importlib.import_module(f"tutor.exercises.{module}").NOTEBOOK
    for folder, solved_ in (("exercises", False), ("solutions", True)):
        stored = _committed(root, f"{folder}/{name}.ipynb")
        built = build_notebook(module, solved_)
        assert [(c.cell_type, c.source) for c in stored.cells] == [(c.cell_type, c.source) for c in built.cells]
        assert "device = tutor.notebook.setup()" in stored.cells[1].source
        checks = [c for c in stored.cells if c.get("id", "").endswith("-check")]
        assert len(checks) >= 3
        if solved_:
            for c in checks:
                text = "".join(o.get("data", {}).get("text/plain", "") for o in c.outputs)
                assert " Correct: " in text, (name, c.source, text)
        else:
            assert all(not c.get("outputs") for c in stored.cells if c.cell_type == "code")
