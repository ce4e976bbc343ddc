"""`python -m tutor`: the course map, the environment check, and forwarding to grade / bench."""
from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import tutor.__main__ as cli
from tutor import course, envcheck
from tutor.envcheck import MISSING, OK, Check

ROOT = Path(__file__).resolve().parents[1]
FILES = ["00_why_sparse_attention.ipynb", "01_dense_masked_attention.ipynb", "02_looped_sparse_attention.ipynb",
         "03_unfold_vectorization.ipynb", "04_gpu_hybrid.ipynb", "05_sparsity_pattern_zoo.ipynb",
         "06_training_with_sparse_attention.ipynb", "07_the_backward_pass.ipynb", "08_beyond_one_device.ipynb",
         "09_into_real_models.ipynb", "10_sliding_windows_in_decoders.ipynb"]
CHECK_NAMES = ["python", "torch", "device", "widgets extension", "jupyterlab", "ipywidgets", "matplotlib", "nbval"]


# --------------------------------------------------------------------------- the real command
def test_python_m_tutor_prints_the_map_in_order_and_the_env_check():
    proc = subprocess.run([sys.executable, "-m", "tutor"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr      # set-up installed everything the check wants
    lines = out.splitlines()
    rows = [next(i for i, line in enumerate(lines) if f"notebooks/{f}" in line) for f in FILES]
    assert rows == sorted(rows)
    for f, row in zip(FILES, rows):
        expected = "[ok" if (ROOT / "notebooks" / f).is_file() else "[not yet written"
        assert expected in lines[row], lines[row]
    for name in CHECK_NAMES:
        assert re.search(rf"^\s+OK\s+{name}\s", out, flags=re.M), f"no OK line for {name}:\n{out}"
    import torch
    assert torch.__version__ in out


def test_map_subcommand_is_the_default(capsys):
    assert cli.main(["map"]) == 0
    with_map = capsys.readouterr().out
    assert cli.main([]) == 0
    assert capsys.readouterr().out == with_map


def test_map_exits_1_and_shows_the_hint_when_something_is_missing(monkeypatch, capsys):
    fake = [Check("python", OK, "3.11.7"), Check("nbval", MISSING, "not installed", "pip install nbval")]
    monkeypatch.setattr(envcheck, "run_checks", lambda: fake)
    assert cli.main([]) == 1
    out = capsys.readouterr().out
    assert re.search(r"MISSING\s+nbval\s+not installed", out) and "-> pip install nbval" in out
    assert "Missing: nbval" in out


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for sub in ("map", "grade", "bench"):
        assert re.search(rf"^\s+{sub}\s", out, flags=re.M), out


def test_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["gradee"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# --------------------------------------------------------------------------- grade / bench
@pytest.mark.parametrize("command, module", [("grade", "tutor.grading"), ("bench", "tutor.bench")])
def test_forwarded_subcommands_pass_argv_and_exit_code(monkeypatch, command, module):
    seen = []
    fake = types.ModuleType(module)
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, module, fake)
    assert cli.main([command, "exercises/", "--help", "-x"]) == 3
    assert seen == [["exercises/", "--help", "-x"]]
    fake.main = lambda argv: None                 # a main that returns None means success
    assert cli.main([command]) == 0


@pytest.mark.parametrize("command, module", [("grade", "tutor.grading"), ("bench", "tutor.bench")])
def test_missing_forwarded_module_exits_2_with_a_clear_message(monkeypatch, capsys, command, module):
    monkeypatch.setitem(sys.modules, module, None)    # makes `import module` fail, as if not written
    assert cli.main([command, "exercises/"]) == 2
    err = capsys.readouterr().err
    assert module in err and "not available" in err


def test_module_without_main_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tutor.bench", types.ModuleType("tutor.bench"))
    assert cli.main(["bench"]) == 2
    assert "no main(argv)" in capsys.readouterr().err


def test_a_broken_import_inside_the_module_is_not_hidden(monkeypatch):
    def import_module(name):
        raise ModuleNotFoundError("No module named 'scipy'", name="scipy")
    monkeypatch.setattr(cli, "importlib", types.SimpleNamespace(import_module=import_module))
    with pytest.raises(ModuleNotFoundError, match="scipy"):
        cli.main(["bench"])


# --------------------------------------------------------------------------- envcheck, unit
def test_widget_extension_missing_directory_is_detected(tmp_path):
    check = envcheck.check_widget_extension([tmp_path], version_of=lambda dist: "3.0.17")
    assert check.status == MISSING and "jupyterlab-manager" in check.detail
    assert "jupyterlab_widgets" in check.hint
    (tmp_path / "@jupyter-widgets" / "jupyterlab-manager").mkdir(parents=True)
    check = envcheck.check_widget_extension([tmp_path / "nope", tmp_path], version_of=lambda dist: "3.0.17")
    assert check.ok and "3.0.17" in check.detail and str(tmp_path) in check.detail


def test_widget_extension_missing_package_is_detected(tmp_path):
    (tmp_path / "@jupyter-widgets" / "jupyterlab-manager").mkdir(parents=True)
    check = envcheck.check_widget_extension([tmp_path], version_of=lambda dist: None)
    assert check.status == MISSING and "ipywidgets" in check.hint


def test_widget_extension_found_in_this_environment():
    assert envcheck.check_widget_extension().ok      # setup.sh installs ipywidgets 8


def test_check_package_missing_old_and_ok():
    versions = {"ipywidgets": "7.8.1", "matplotlib": "3.9.0"}
    look = versions.get
    missing = envcheck.check_package("nbval", version_of=look)
    assert missing.status == MISSING and missing.detail == "not installed" and "nbval" in missing.hint
    old = envcheck.check_package("ipywidgets", "8", version_of=look)
    assert old.status == MISSING and "older than 8" in old.detail and "ipywidgets>=8" in old.hint
    ok = envcheck.check_package("matplotlib", version_of=look)
    assert ok.ok and ok.detail == "3.9.0"


def test_check_python_minimum():
    assert envcheck.check_python((3, 10, 0)).ok
    old = envcheck.check_python((3, 9, 18))
    assert old.status == MISSING and "3.9.18" in old.detail and "3.10" in old.hint


@pytest.mark.parametrize("cuda, hip, want", [(None, None, "CPU build"), ("12.8", None, "CUDA 12.8 build"),
                                              (None, "6.2", "ROCm 6.2 build")])
def test_torch_build_names(cuda, hip, want):
    assert envcheck.torch_build(cuda, hip) == want


@pytest.mark.parametrize("text, want", [("2.13.0+cpu", (2, 13, 0)), ("8.1.0rc1", (8, 1)), ("3", (3,))])
def test_version_tuple(text, want):
    assert envcheck.version_tuple(text) == want


def test_real_torch_and_device_checks():
    import torch
    t, d = envcheck.check_torch(), envcheck.check_device()
    assert t.ok and torch.__version__ in t.detail
    assert d.ok and (("cuda" in d.detail) == torch.cuda.is_available())


def test_format_checks_puts_the_hint_under_a_missing_line():
    lines = envcheck.format_checks([Check("torch", OK, "2.13.0"), Check("nbval", MISSING, "not installed", "do X")])
    assert re.match(r"\s+OK\s+torch\s+2\.13\.0$", lines[0])
    assert lines[1].splitlines()[1].strip() == "-> do X"


# --------------------------------------------------------------------------- course map, unit
def test_course_lists_every_notebook_in_order():
    assert [nb.number for nb in course.NOTEBOOKS] == [int(f[:2]) for f in FILES]
    assert [nb.file for nb in course.NOTEBOOKS] == FILES
    assert all(nb.title and nb.summary for nb in course.NOTEBOOKS)


def test_course_map_marks_existing_files(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "exercises").mkdir()
    (tmp_path / "notebooks" / FILES[2]).write_text("{}")
    (tmp_path / "exercises" / FILES[2]).write_text("{}")
    entries = course.course_map(tmp_path)
    assert [e.exists for e in entries] == [i == 2 for i in range(len(FILES))]
    assert [e.exercise_exists for e in entries] == [i == 2 for i in range(len(FILES))]
    lines = course.format_map(entries)
    assert "[ok, exercise]" in lines[4] and "[not yet written]" in lines[0]
