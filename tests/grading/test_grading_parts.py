"""The grader's parts that run without a kernel: the stubs that switch the course's functions off,
the plain-data reader of what a kernel sends back, and ``python -m tutor grade --help``."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from tutor.grading import stubs, verdicts

ROOT = Path(__file__).resolve().parents[2]


def test_stubs_refuse_a_reference_always_and_a_forbidden_function_outside_allowing():
    def reference(x):
        return x + 1

    def helper(x):
        return x * 2

    def other(x):
        return x - 1
    alias = helper
    assert stubs.install([(reference, True), (helper, False), (other, False)]) == 3
    for fn, arg in ((reference, 1), (alias, 1), (other, 1)):
        with pytest.raises(stubs.WriteItYourself, match="switched off while grading"):
            fn(arg)
    with stubs.allowing([other]):                     # the answer of a question that forbids `other`
        assert helper(3) == 6
        with pytest.raises(stubs.WriteItYourself):
            other(3)
        with pytest.raises(stubs.WriteItYourself, match="reference answer"):
            reference(3)
    with pytest.raises(stubs.WriteItYourself):
        helper(3)                                     # off again afterwards
    assert stubs.key_of(helper) is not None and stubs.key_of(len) is None


def test_load_plain_takes_plain_data_only(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"value": [torch.ones(2), 3, "x", None], "after": []}, good)
    got = verdicts.load_plain(str(good))
    assert torch.equal(got["value"][0], torch.ones(2)) and got["value"][1:] == [3, "x", None]

    sparse, ordered = tmp_path / "sparse.pt", tmp_path / "ordered.pt"
    torch.save(torch.eye(2).to_sparse(), sparse)                       # not a strided plain tensor
    torch.save(OrderedDict(a=1), ordered)                              # loads, but is not a plain dict
    link = tmp_path / "link.pt"
    os.symlink(good, link)
    for path in (sparse, ordered, link, tmp_path / "missing.pt", tmp_path):
        with pytest.raises(verdicts.NotPlainData):
            verdicts.load_plain(str(path))


def test_grade_help_names_the_options():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "tutor", "grade", "--help"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m tutor grade")
    for option in ("--json", "--timeout", "--deadline", "--memory-mb", "--nproc", "--kernel", "--jobs"):
        assert option in done.stdout


def test_writable_by_finds_what_a_user_could_change(tmp_path):
    from tutor.grading import runner
    mine, theirs = tmp_path / "mine.py", tmp_path / "theirs.py"
    mine.write_text("x = 1")
    theirs.write_text("x = 1")
    os.chmod(tmp_path, 0o755)
    os.chmod(theirs, 0o644)
    os.chmod(mine, 0o666)                              # writable by others
    found = runner.writable_by([54321], [tmp_path])
    assert str(mine) in found and str(theirs) not in found


def test_judging_imports_nothing_new(tmp_path, monkeypatch):
    """A checker that imports a module not loaded before grading fails closed (a kernel may have written it)."""
    import re
    from tutor.exercises.feedback import Result
    (tmp_path / "written_by_a_kernel.py").write_text("OK = True")
    monkeypatch.syspath_prepend(str(tmp_path))

    class Question:
        id = "00.q9"

        def judge(self, answer):
            try:
                __import__("written_by_a_kernel")
            except ImportError as exc:
                return Result(self.id, "incorrect", str(exc))
            return Result(self.id, "correct", "imported")

    class Kernel:
        out_dir, dead = tmp_path, False

        def run(self, source, timeout):
            torch.save({"kind": "value", "value": 1}, re.findall(r"'([^']+\.pt)'", source)[-1])
            return "ok", ""
    verdicts.prepare([])
    result, = verdicts.judge(Kernel(), [Question()])
    assert result.status == "incorrect" and "imports nothing while judging" in result.message


def test_load_plain_limits_what_a_reply_costs_once_decoded(tmp_path):
    """Issue 22, findings 6-8: shared nesting, a deflated archive, an expanded tensor are refused, fast."""
    import time
    import zipfile
    nested = [0] * 8
    for _ in range(7):
        nested = [nested] * 8                       # ~1 KB on disk, 8**7 objects once walked
    shared = tmp_path / "shared.pt"
    torch.save({"value": nested, "after": []}, shared)
    plain = tmp_path / "plain.pt"
    torch.save({"value": torch.zeros(1 << 20, dtype=torch.uint8), "after": []}, plain)
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, zin.read(item.filename))
    expanded = tmp_path / "expanded.pt"
    torch.save({"value": torch.zeros(1).expand(25000, 20000), "after": []}, expanded)
    overlapping = tmp_path / "overlapping.pt"
    torch.save({"value": torch.zeros(10).as_strided((5, 5), (1, 1)), "after": []}, overlapping)
    start = time.monotonic()
    for path in (shared, deflated, expanded, overlapping):
        with pytest.raises(verdicts.NotPlainData):
            verdicts.load_plain(str(path))
    assert time.monotonic() - start < 10
    # plain replies still pass, with tensors that share nothing (a view comes back as its own tensor)
    base = torch.arange(6.0)
    view = tmp_path / "view.pt"
    torch.save({"value": base.view(2, 3).t(), "after": [base]}, view)
    got = verdicts.load_plain(str(view))
    assert torch.equal(got["value"], base.view(2, 3).t()) and torch.equal(got["after"][0], base)
    got["after"][0].add_(1)
    assert torch.equal(got["value"], base.view(2, 3).t())
    assert verdicts.load_plain(str(plain))["value"].numel() == 1 << 20
