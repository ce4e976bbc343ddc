"""Packaging and set-up: pyproject.toml, environment.yml, README's commands, setup.sh and .ci/run.

setup.sh and .ci/run are exercised for real, in a scratch copy, with a stub ``python`` that logs
what it is asked to do, so these tests install nothing and stay fast.
"""
from __future__ import annotations

import importlib
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = {"torch", "numpy", "matplotlib", "ipywidgets", "jupyterlab", "tqdm", "nbclient", "nbformat", "ipykernel"}
DEV = {"pytest", "hypothesis", "nbval", "playwright"}
CONDA_TO_PIP = {"pytorch": "torch", "playwright-python": "playwright"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def norm(name: str) -> str:
    name = re.sub(r"[-_.]+", "-", name.lower())
    return CONDA_TO_PIP.get(name, name)


def split_spec(item: str):
    """'ipywidgets>=8' -> ('ipywidgets', '>=8'); conda and pip spellings alike."""
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)$", item)
    return norm(m.group(1)), m.group(2).replace(" ", "")


def read_environment_yml(text: str):
    """A tiny reader for environment.yml's ``dependencies``: (conda items, pip items)."""
    conda, pip, section, pip_indent = [], [], None, None
    for raw in text.splitlines():
        line = raw.split(" #")[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            section, pip_indent = (line[:-1] if line.endswith(":") else None), None
            continue
        if section != "dependencies" or not line.lstrip().startswith("- "):
            continue
        item = line.lstrip()[2:].strip()
        if pip_indent is not None and indent > pip_indent:
            pip.append(item)
            continue
        pip_indent = indent if item == "pip:" else None
        if item != "pip:":
            conda.append(item)
    return conda, pip


def code_blocks(markdown: str, lang: str):
    return re.findall(rf"```{lang}\n(.*?)```", markdown, flags=re.S)


def quickstart_commands() -> list:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = code_blocks(section, "bash")[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


#: setup.sh adds the gpu extra (triton, for its CPU interpreter tests) where triton has wheels
EXTRAS = "dev,gpu" if platform.system() == "Linux" and platform.machine() == "x86_64" else "dev"


# --------------------------------------------------------------------------- dependency lists
def test_pyproject_lists_runtime_dev_and_gpu_dependencies():
    project = pyproject()["project"]
    assert project["requires-python"] == ">=3.10"
    runtime = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    assert set(runtime) == RUNTIME
    assert runtime["torch"].specifier.contains(Version("2.13.0"))      # setup.sh's CPU wheel fits
    assert runtime["ipywidgets"].specifier.contains(Version("8.1.0"))
    assert not runtime["ipywidgets"].specifier.contains(Version("7.8.0"))
    assert not runtime["jupyterlab"].specifier.contains(Version("3.6.0"))
    extras = project["optional-dependencies"]
    assert {Requirement(r).name for r in extras["dev"]} == DEV
    assert {Requirement(r).name for r in extras["gpu"]} == {"triton"}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    conda, pip = read_environment_yml((ROOT / "environment.yml").read_text())
    conda_specs = dict(split_spec(c) for c in conda if split_spec(c)[0] not in ("python", "pip"))
    project = pyproject()["project"]
    pip_specs = dict(split_spec(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"])
    assert conda_specs == pip_specs
    assert any(split_spec(c)[0] == "python" and ">=3.10" in c for c in conda)
    assert "-e ." in pip, pip


def test_tiny_yaml_reader_separates_conda_and_pip_items():
    text = "name: x\ndependencies:\n  - python>=3.10\n  - pytorch>=2.5  # torch\n  - pip:\n      - -e .\n  - numpy\n"
    assert read_environment_yml(text) == (["python>=3.10", "pytorch>=2.5", "numpy"], ["-e ."])


def test_pytest_markers_are_registered():
    markers = {m.split(":")[0] for m in pyproject()["tool"]["pytest"]["ini_options"]["markers"]}
    assert {"browser", "slow", "gpu"} <= markers


# --------------------------------------------------------------------------- README
def test_readme_quickstart_is_setup_then_the_test_command_ci_runs():
    commands = quickstart_commands()
    assert commands == ["bash setup.sh --open", "python -m pytest"], commands
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert commands[1] in ci_lines, "README's test command must appear verbatim as a line of .ci/run"
    setup_lines = [line for line in ci_lines if "bash setup.sh" in line and not line.startswith("#")]
    assert setup_lines and not any("--open" in line for line in setup_lines)   # CI never starts JupyterLab


def test_readme_lists_every_notebook_in_order():
    from tutor.course import NOTEBOOKS
    readme = (ROOT / "README.md").read_text()
    positions = [readme.find(nb.path) for nb in NOTEBOOKS]
    assert -1 not in positions, [nb.path for nb, p in zip(NOTEBOOKS, positions) if p < 0]
    assert positions == sorted(positions)


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


def test_readme_python_snippets_run():
    blocks = code_blocks((ROOT / "README.md").read_text(), "python")
    assert blocks, "README should show the practitioner snippet as a ```python block"
    for block in blocks:
        if "transformers" in block and not _importable("transformers"):
            continue                                  # the Longformer swap needs the `peers` extra
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_snippet"})


# --------------------------------------------------------------------------- .ci/run
def write_exe(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def ci_tree(tmp_path):
    """A copy of .ci/run beside a stub setup.sh and a stub `python`; both log and exit as told."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    log = tmp_path / "log"
    (tmp_path / "setup.sh").write_text(f'echo "setup $*" >> {log}\nexit "${{SETUP_RC:-0}}"\n')
    write_exe(tmp_path / "bin" / "python", f'#!/usr/bin/env bash\necho "python $*" >> {log}\nexit "${{PYTEST_RC:-0}}"\n')

    def run(**env):
        full = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "CI": "true", **env}
        proc = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], cwd="/", env=full,
                              capture_output=True, text=True, timeout=60)
        calls = log.read_text().splitlines() if log.exists() else []
        return proc, calls
    return run


def test_ci_run_sets_up_then_tests_and_prints_timings(ci_tree):
    proc, calls = ci_tree()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls == ["setup ", "python -m pytest"]
    assert re.search(r"set-up took \d+ s", proc.stdout) and re.search(r"tests took \d+ s", proc.stdout)


def test_ci_run_fails_when_pytest_collects_no_tests(ci_tree):
    proc, _ = ci_tree(PYTEST_RC="5")
    assert proc.returncode != 0
    assert "no tests" in proc.stderr


@pytest.mark.parametrize("rc", ["1", "2"])
def test_ci_run_passes_pytest_failures_through(ci_tree, rc):
    proc, _ = ci_tree(PYTEST_RC=rc)
    assert proc.returncode == int(rc)


def test_ci_run_stops_when_setup_fails(ci_tree):
    proc, calls = ci_tree(SETUP_RC="3")
    assert proc.returncode != 0
    assert calls == ["setup "]


# --------------------------------------------------------------------------- setup.sh
STUB_PYTHON = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$STUB_LOG"
if [ "${1:-}" = - ]; then
    case "$(cat)" in
        *torch-check*) exit "${STUB_TORCH_RC:-1}" ;;
        *install-stamp*) [ -n "${STUB_STAMP:-}" ] && printf '%s\n' "$STUB_STAMP"; exit 0 ;;
    esac
fi
exit 0
"""


def run_setup(tmp_path, *args, **env):
    shutil.copy(ROOT / "setup.sh", tmp_path / "setup.sh")
    write_exe(tmp_path / "bin" / "python", STUB_PYTHON)
    full = {k: v for k, v in os.environ.items() if k not in ("TORCH_SPEC", "TORCH_INDEX_URL", "TUTOR_PEERS")}
    full.update(PYTHON=str(tmp_path / "bin" / "python"), STUB_LOG=str(tmp_path / "log"),
                TUTOR_SKIP_CHROMIUM="1", **env)
    proc = subprocess.run(["bash", str(tmp_path / "setup.sh"), *args], cwd="/", env=full,
                          capture_output=True, text=True, timeout=60)
    log = tmp_path / "log"
    return proc, [c for c in (log.read_text().splitlines() if log.exists() else []) if "pip" in c]


def test_setup_installs_cpu_torch_before_the_package(tmp_path):
    proc, pip_calls = run_setup(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pip_calls == ["-m pip install -q torch==2.13.0", f"-m pip install -q -e .[{EXTRAS}]"]


def test_setup_honours_torch_spec_and_index_url(tmp_path):
    proc, pip_calls = run_setup(tmp_path, TORCH_SPEC="torch==2.5.1",
                                TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pip_calls[0] == "-m pip install -q torch==2.5.1 --index-url https://download.pytorch.org/whl/cpu"


def test_setup_keeps_a_torch_that_already_satisfies_the_spec(tmp_path):
    proc, pip_calls = run_setup(tmp_path, STUB_TORCH_RC="0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pip_calls == [f"-m pip install -q -e .[{EXTRAS}]"]
    assert "already satisfies torch==2.13.0" in proc.stdout


def test_setup_skips_the_package_install_when_nothing_changed(tmp_path):
    proc, pip_calls = run_setup(tmp_path, STUB_TORCH_RC="0", STUB_STAMP="python=x pyproject=1 tutor=this checkout")
    assert proc.returncode == 0 and pip_calls == [f"-m pip install -q -e .[{EXTRAS}]"], proc.stdout + proc.stderr
    assert (tmp_path / ".setup-stamp").read_text().strip() == "python=x pyproject=1 tutor=this checkout"
    (tmp_path / "log").unlink()
    proc, pip_calls = run_setup(tmp_path, STUB_TORCH_RC="0", STUB_STAMP="python=x pyproject=1 tutor=this checkout")
    assert proc.returncode == 0 and pip_calls == [], proc.stdout + proc.stderr
    assert "already installed from this checkout" in proc.stdout
    (tmp_path / "log").unlink(missing_ok=True)
    proc, pip_calls = run_setup(tmp_path, STUB_TORCH_RC="0", STUB_STAMP="python=x pyproject=2 tutor=this checkout")
    assert pip_calls == [f"-m pip install -q -e .[{EXTRAS}]"]              # pyproject.toml changed: reinstall


def test_setup_install_stamp_for_real(tmp_path):
    """setup.sh's install-stamp, run by this Python: it changes with pyproject.toml and knows where tutor is."""
    script = "# " + (ROOT / "setup.sh").read_text().split("# install-stamp:", 1)[1].split("\nEOF\n", 1)[0]

    def stamp(cwd) -> str:
        return subprocess.run([sys.executable, "-", "dev"], input=script, cwd=cwd, text=True, capture_output=True,
                              timeout=30, check=True).stdout.strip()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    first = stamp(tmp_path)
    assert f"python={sys.executable} extras=dev" in first and first.endswith("tutor=elsewhere")
    assert stamp(tmp_path) == first
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'y'\n")
    assert stamp(tmp_path) != first
    import tutor
    repo = Path(tutor.__file__).resolve().parents[1]                       # the checkout tutor imports from
    assert stamp(repo).endswith("tutor=this checkout")


def test_setup_adds_the_peers_extra_when_asked(tmp_path):
    proc, pip_calls = run_setup(tmp_path, STUB_TORCH_RC="0", TUTOR_PEERS="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pip_calls == [f"-m pip install -q -e .[{EXTRAS},peers]"]
    assert "TUTOR_PEERS=1" in (ROOT / ".ci" / "run").read_text()
    peers = {Requirement(r).name for r in pyproject()["project"]["optional-dependencies"]["peers"]}
    assert peers == {"transformers", "local-attention"}


def test_setup_help_and_bad_arguments(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "setup.sh"), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "TORCH_INDEX_URL" in proc.stdout and "--open" in proc.stdout
    proc, pip_calls = run_setup(tmp_path, "--nope")
    assert proc.returncode == 2 and "--nope" in proc.stderr and pip_calls == []


def test_setup_checks_the_torch_spec_for_real():
    """setup.sh's torch-check, run by this Python: the installed torch satisfies its own version."""
    script = (ROOT / "setup.sh").read_text().split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    import torch
    base = torch.__version__.split("+")[0]

    def check(spec: str) -> int:
        return subprocess.run([sys.executable, "-", spec], input=script, text=True, timeout=30).returncode
    assert check(f"torch=={base}") == 0
    assert check("torch<1.0") == 1
    assert check("surely-not-installed-pkg>=1") == 1


# --------------------------------------------------------------------------- what pytest collects
NOTEBOOK = """{"cells": [{"cell_type": "code", "execution_count": 1, "id": "c0", "metadata": {},
  "outputs": [{"name": "stdout", "output_type": "stream", "text": ["took 12.5 ms\\n"]}],
  "source": ["print('took 0.25 ms')"]}],
 "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
 "nbformat": 4, "nbformat_minor": 5}"""


def scratch_tree(tmp_path: Path, notebooks=()) -> Path:
    """Our pytest config (pyproject.toml, tests/conftest.py, the sanitize file), one trivial test,
    and ``notebooks`` (paths relative to the tree) holding a one-cell notebook."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "tests").mkdir()
    for name in ("conftest.py", "nbval_sanitize.cfg"):
        shutil.copy(ROOT / "tests" / name, tmp_path / "tests" / name)
    (tmp_path / "tests" / "test_one.py").write_text("def test_one():\n    assert True\n")
    for nb in notebooks:
        (tmp_path / nb).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / nb).write_text(NOTEBOOK)
    return tmp_path


def run_default_pytest(tree: Path) -> subprocess.CompletedProcess:
    """README's test command, verbose, in ``tree``."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rN"], cwd=tree,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_default_run_replays_notebooks_dir_only_with_sanitizing(tmp_path):
    """nbval replays notebooks/ (the stored 12.5 ms only matches the fresh 0.25 ms once
    tests/nbval_sanitize.cfg masks timings) and no notebook from exercises/, solutions/, tests/
    or .ipynb_checkpoints/ is collected."""
    tree = scratch_tree(tmp_path, ["notebooks/a.ipynb", "notebooks/.ipynb_checkpoints/a-checkpoint.ipynb",
                                   "exercises/a.ipynb", "solutions/a.ipynb", "tests/data/fixture.ipynb"])
    ran = run_default_pytest(tree)
    passed = sorted(line.split()[0] for line in ran.stdout.splitlines() if " PASSED" in line)
    # nbval's verbose node id reads "notebooks/a::ipynb::Cell 0"
    assert passed == ["notebooks/a::ipynb::Cell", "tests/test_one.py::test_one"], ran.stdout + ran.stderr
    for elsewhere in ("exercises", "solutions", "fixture", "checkpoint"):
        assert elsewhere not in ran.stdout, ran.stdout
    assert ran.returncode == 0 and "2 passed" in ran.stdout, ran.stdout + ran.stderr


@pytest.mark.slow
def test_default_run_without_notebooks_dir_still_runs_the_tests(tmp_path):
    ran = run_default_pytest(scratch_tree(tmp_path))
    assert ran.returncode == 0 and "1 passed" in ran.stdout, ran.stdout + ran.stderr
