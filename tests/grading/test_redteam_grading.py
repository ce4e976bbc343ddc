"""Red team: `python -m tutor grade` on generated hostile notebooks (issue 11's attacks and more).

Every notebook below tries to get points without solving anything, or to hang, crash or outlive
the grader. One grading run over all of them (two at a time, short limits) must give 0 points, a
row for every notebook, leave no process and no temporary folder behind, and end in bounded time.
Run alone with ``python -m pytest tests/grading/test_redteam_grading.py -m redteam`` (about a minute).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook

from tutor.grading import runner

ROOT = Path(__file__).resolve().parents[2]
MARK = "4242.25"               # a sleep a detached process runs: must not survive grading
CELL, DEADLINE = 10, 25

SETUP = "import os, sys, types, inspect, json, time, signal, threading\nimport torch, tutor\nfrom tutor import exercises"
Q = 'q1, q2, q3 = (exercises.question(f"00.q{k}") for k in (1, 2, 3))'
WRONG_MASK = "lambda T, window: torch.zeros(T, T, dtype=torch.bool)"


def answers(q1: str, q2: str) -> str:
    """Check ``q1`` for 00.q1 (local mask) and ``q2`` for 00.q2 (pair count)."""
    return f"q1.check({q1})\nq2.check({q2})"


ATTACKS = {
    # ---------------------------------------------------------------- forged verdicts (issue 11)
    "results_file_and_progress": [
        "from tutor.exercises import progress, feedback\nids = [q.id for q in exercises.questions()]\n"
        "line = ''.join(json.dumps({'id': i, 'status': 'correct', 'message': 'ok'}) + '\\n' for i in ids)\n"
        "for p in [os.environ.get('TUTOR_GRADE_RESULTS', 'results.jsonl'), 'results.jsonl', '../results.jsonl']:\n"
        "    try:\n        open(p, 'a').write(line)\n    except OSError:\n        pass\n"
        "for i in ids:\n    progress.record(feedback.Result(i, 'correct', 'forged'))"],
    "patched_checker": [
        "from tutor.exercises import problem, compare\nfrom tutor.exercises.feedback import Result\n"
        "ok = lambda self, a: Result(self.id, 'correct', 'forged')\n"
        "problem.FunctionProblem._check = ok; problem.ValueProblem._check = ok; problem.Problem._check = ok\n"
        "compare.tensor_problem = lambda *a, **k: None\n"
        "type(q1)._compare = staticmethod(lambda *a: None); type(q1)._cases = (); type(q2)._cases = ()\n"
        "problem.record_checks_with(None)",
        answers(WRONG_MASK, "lambda T, window: 0") + "\nq3.check(1)"],
    "reference_passed_directly": [
        "from tutor.exercises.nb00 import count_local_pairs_reference",
        answers("q1.reference", "count_local_pairs_reference") + "\nq3.check(q3.reference)"],
    "profiler_off_thread_and_clone": [
        "from concurrent.futures import ThreadPoolExecutor\nref1, ref2 = type(q1)._reference, type(q2)._reference\n"
        "def mask(T, window):\n    sys.setprofile(None)\n    return ref1(T, window)\n"
        "def count(T, window):\n    with ThreadPoolExecutor(1) as ex:\n        return ex.submit(ref2, T, window).result()",
        answers("mask", "count"),
        "clone = types.FunctionType(ref1.__code__.replace(co_name='mine'), ref1.__globals__, 'mine')\n"
        "q1.check(clone)"],
    "exec_module_source_and_library": [
        "import tutor.exercises.nb00 as m\nns = {'__name__': 'tutor.exercises.fake', '__package__': 'tutor.exercises'}\n"
        "exec(compile('\\n' + inspect.getsource(m), m.__file__, 'exec'), ns)\n"
        "from tutor.masks import hybrid_mask, generate_local_window",
        answers("ns['local_mask_reference']", "ns['count_local_pairs_reference']"),
        "q2.check(lambda T, window: int(hybrid_mask(T, window, torch.zeros(1, T, dtype=torch.bool)).sum()))"],
    "table_frames_and_subclass": [
        "table = {}\nfor c in type(q1)._cases:\n    try:\n        table[tuple(sorted(c.values.items()))] = q1.reference(**c.tensors())\n"
        "    except Exception:\n        pass\n"
        "def walk(T, window):\n    f = sys._getframe()\n    while f is not None:\n        if 'expected' in f.f_locals:\n"
        "            return f.f_locals['expected']\n        f = f.f_back\n    return table.get((('T', T), ('window', window)), 0)",
        "class Yes(torch.Tensor):\n    def __eq__(self, other):\n        return True\n    __ne__ = lambda s, o: False\n"
        "torch.equal = lambda *a: True; torch.isclose = lambda a, b, **k: torch.ones_like(a, dtype=torch.bool)\n"
        "def sub(T, window):\n    return torch.zeros(T, T, dtype=torch.bool).as_subclass(Yes)\n"
        "class Int(int):\n    __eq__ = lambda s, o: True\n    __hash__ = int.__hash__",
        answers("sub", "walk") + "\nq3.check(Int(1))"],
    "value_question_from_the_package": [
        "q3.check(type(q3)._value)", "ns = {}\nexec(q3._solution, ns)\nq3.check(ns.get(q3._name, 0))",
        "ns = {}\nexec(q3.solution_code, ns)\nq3.check(ns.get(q3.answer_name, 0))"],
    "own_child_module": [                                     # replace the kernel side of grading itself
        "import tutor.grading.child as c\nc.describe = lambda qid, out: torch.save({'kind': 'value', 'value': q3.reference}, out)\n"
        "def call(qid, inp, out, s):\n    args = torch.load(inp)\n    torch.save({'value': args[0], 'after': args, 'error': None}, out)\n"
        "c.call = call", answers(WRONG_MASK, "lambda T, window: 0")],
    "other_notebooks_questions": [                            # 00 checks 01's questions: they never count
        "for i in ('01.q1', '01.q2', '01.q3', '01.q4'):\n    exercises.question(i).check(exercises.question(i).reference)"],
    # ---------------------------------------------------------------- breaking the run (issue 11 and ours)
    "kill_parent": ["os.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(1)", "os.killpg(0, signal.SIGKILL)"],
    "detached_processes": [
        f"import subprocess\nsubprocess.Popen(['sleep', '{MARK}'], start_new_session=True)\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        for _ in range(300):\n            for p in ('../results.jsonl', 'results.jsonl'):\n"
        "                try: open(p, 'a').write('{\"id\": \"00.q1\", \"status\": \"correct\"}\\n')\n"
        "                except OSError: pass\n            time.sleep(0.1)\n"
        "    os._exit(0)", answers(WRONG_MASK, "lambda T, window: 0")],
    "hang_cell": ["while True:\n    pass", "print('never')"],
    "hang_notebook": [f"time.sleep({CELL - 3})"] * 5,
    "answer_ignores_alarm": [
        "def mask(T, window):\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    while True:\n        pass\n"
        "def count(T, window):\n    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])\n    time.sleep(10 ** 6)",
        answers("mask", "count")],
    "fifo_links_and_folders": [                               # turn everything the kernel may write into traps
        "def trap():\n    while True:\n        for n in os.listdir('.'):\n            if n.endswith('.pt'):\n"
        "                try:\n                    os.unlink(n); os.mkfifo(n)\n                except OSError:\n                    pass\n"
        "        time.sleep(0.001)\nthreading.Thread(target=trap, daemon=True).start()",
        "for n in range(50):\n    try:\n        os.symlink('/dev/zero', f'{n}.pt'); os.mkdir(f'd{n}.pt')\n    except OSError:\n        pass",
        answers("lambda T, window: torch.ones(T, T, dtype=torch.bool)", "lambda T, window: 1")],
    "memory": ["try:\n    x = bytearray(64 << 30)\nexcept MemoryError:\n    print('no 64 GiB')",
               answers(WRONG_MASK, "lambda T, window: 0")],
    "output_flood": ["for _ in range(20):\n    print('x' * 1_000_000)", answers(WRONG_MASK, "lambda T, window: 0")],
    "many_processes": [
        "kids = 0\ntry:\n    for _ in range(2000):\n        if os.fork() == 0:\n            time.sleep(600)\n            os._exit(0)\n"
        "        kids += 1\nexcept OSError:\n    pass\nprint(kids)",
        answers(WRONG_MASK, "lambda T, window: 0")],
    "kill_everything": ["os.kill(-1, signal.SIGKILL)"],           # only with a PID namespace (see below)
}


def _write(folder: Path, name: str, cells) -> None:
    folder.mkdir(parents=True)
    nb = new_notebook(cells=[new_code_cell(SETUP), new_code_cell(Q)] + [new_code_cell(c) for c in cells])
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nbformat.write(nb, folder / name)


def _processes_mentioning(*needles: str) -> list:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if any(n in cmd for n in needles) and int(pid) != os.getpid():
            found.append((pid, cmd[:120]))
    return found


@pytest.mark.slow
@pytest.mark.redteam
def test_hostile_notebooks_get_nothing_and_break_nothing(tmp_path):
    attacks = dict(ATTACKS)
    if "PID namespace" not in runner.isolation():
        attacks.pop("kill_everything")        # without a PID namespace, kill(-1) would reach our own processes
    subs = tmp_path / "subs"
    for k, (name, cells) in enumerate(attacks.items()):
        _write(subs / f"{k:02d}_{name}", f"00_{name}.ipynb", cells)
    # issue 11: an unnumbered notebook that solves everything, and a solved copy next to one's own
    lazy = tmp_path / "lazy"
    _write(lazy, "00_mine.ipynb", [answers(WRONG_MASK, "lambda T, window: 0")])
    solved = nbformat.read(ROOT / "solutions" / "00_why_sparse_attention.ipynb", as_version=4)
    nbformat.write(solved, lazy / "00_mine_copy.ipynb")
    nbformat.write(solved, lazy / "notes.ipynb")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(scratch), TUTOR_CHECK_TIME_LIMIT="1",
               TUTOR_PROGRESS_FILE=str(tmp_path / "progress.json"))
    report = tmp_path / "grades.json"
    folders = sorted(str(p) for p in subs.iterdir()) + [str(lazy)]
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "tutor", "grade", *folders, "--jobs", "2", "--timeout", str(CELL),
                           "--deadline", str(DEADLINE), "--json", str(report)],
                          env=env, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {Path(n["path"]).name: n for n in json.loads(report.read_text())["notebooks"]}
    table = done.stdout
    # a row for every notebook, and not one forged point
    assert set(rows) == {f"00_{name}.ipynb" for name in attacks} | {"00_mine.ipynb", "00_mine_copy.ipynb", "notes.ipynb"}
    forged = {name: row["points"] for name, row in rows.items() if row["points"] and name != "00_mine.ipynb"}
    assert forged == {}, table
    # the learner's folder counts notebook 00 once (its first copy), the unnumbered one not at all
    assert rows["00_mine.ipynb"]["points"] == 0 and rows["00_mine.ipynb"]["max_points"] == 3 and rows["00_mine_copy.ipynb"]["status"] == "duplicate"
    assert rows["notes.ipynb"]["status"] == "unnumbered" and rows["notes.ipynb"]["max_points"] == 0
    assert all(q["id"].startswith("00.") for r in rows.values() for q in r["questions"])
    assert rows["00_hang_cell.ipynb"]["status"] == "timeout" and "cell 3" in rows["00_hang_cell.ipynb"]["note"]
    assert rows["00_hang_notebook.ipynb"]["status"] == "timeout" and "notebook" in rows["00_hang_notebook.ipynb"]["note"]
    assert rows["00_kill_parent.ipynb"]["status"] in ("graded", "kernel died")
    stalled = {q["id"]: q["message"] for q in rows["00_answer_ignores_alarm.ipynb"]["questions"]}
    assert "did not finish" in stalled["00.q1"] and "did not finish" in stalled["00.q2"]
    assert "write this yourself" in json.dumps(rows["00_reference_passed_directly.ipynb"])
    # nothing left behind, within the deadlines
    time.sleep(0.5)
    assert _processes_mentioning(MARK, str(tmp_path)) == []
    assert list(scratch.iterdir()) == []
    assert took < 2 * 300


# ---------------------------------------------------------------------------------- issue 22, one test each
def _grade(tmp_path: Path, paths, *options: str, **env_extra: str):
    """``python -m tutor grade PATHS --json`` in a subprocess; ``(completed, {notebook name: row})``."""
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    report = tmp_path / "grades.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(scratch), TUTOR_CHECK_TIME_LIMIT="2",
               TUTOR_PROGRESS_FILE=str(tmp_path / "progress.json"), **env_extra)
    done = subprocess.run([sys.executable, "-m", "tutor", "grade", *map(str, paths), "--timeout", str(CELL),
                           "--deadline", "60", "--json", str(report), *options],
                          env=env, capture_output=True, timeout=600)
    rows = ({Path(n["path"]).name: n for n in json.loads(report.read_text())["notebooks"]}
            if report.exists() else {})
    return done, rows


def _notebook(folder: Path, name: str, *cells: str) -> Path:
    _write(folder, name, list(cells))
    return folder / name


@pytest.mark.slow
@pytest.mark.redteam
def test_kernels_cannot_change_the_package_or_torch(tmp_path):
    """Finding 1: a kernel never runs as root unasked; it cannot write into tutor/ or torch/."""
    import torch
    token = os.urandom(4).hex()
    targets = [ROOT / "tutor" / f"owned_{token}.py", Path(torch.__file__).parent / f"owned_{token}.py"]
    try:
        nb = _notebook(tmp_path / "sub", "00_owner.ipynb",
                       f"for p in {[str(t) for t in targets]!r}:\n    try:\n        open(p, 'w').write('x = 1')\n"
                       f"    except OSError:\n        pass", answers(WRONG_MASK, "lambda T, window: 0"))
        done, rows = _grade(tmp_path, [nb])
        assert done.returncode == 0, done.stderr[-2000:]
        assert [t for t in targets if t.exists()] == []
        assert rows["00_owner.ipynb"]["points"] == 0 and rows["00_owner.ipynb"]["status"] == "graded"
        assert b"kernels run as " in done.stderr and b"kernels run as root" not in done.stderr
    finally:
        for t in targets:
            t.unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.redteam
def test_root_kernels_are_refused_without_the_opt_out(tmp_path):
    """Finding 1: as root, where nobody cannot run this Python and no mount namespace may expose it
    (forced here), the grader refuses with a clear message instead of running kernels as root."""
    if os.geteuid() != 0 or not runner.closed_paths():
        pytest.skip("needs a grader run as root with its Python inside a folder closed to others")
    nb = _notebook(tmp_path / "sub", "00_blank.ipynb", "x = 1")
    done, rows = _grade(tmp_path, [nb], TUTOR_GRADE_NO_NAMESPACES="1")
    assert done.returncode == 3 and b"--allow-root-kernels" in done.stderr and b"Traceback" not in done.stderr
    done, rows = _grade(tmp_path, [nb], "--allow-root-kernels", TUTOR_GRADE_NO_NAMESPACES="1")
    assert done.returncode == 0 and b"kernels run as root" in done.stderr and rows["00_blank.ipynb"]["points"] == 0


REACH_OTHER_KERNELS = '''
from jupyter_client import BlockingKernelClient
import ipykernel
own = ipykernel.get_connection_file()
CODE = """
import torch, tutor.grading.child as c
c._ANSWERS['00.q1'] = lambda T, window: (torch.arange(T)[:, None] - torch.arange(T)[None]).abs() <= window
"""
end = time.time() + 8
while time.time() < end:
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            args = open(f'/proc/{pid}/cmdline', 'rb').read().decode(errors='replace').split('\\0')
        except OSError:
            continue
        for a in args:
            if a.endswith('kernel.json') and os.path.dirname(a) != os.path.dirname(own):
                try:
                    kc = BlockingKernelClient(connection_file=a)
                    kc.load_connection_file()
                    kc.start_channels()
                    kc.execute(CODE)
                except Exception:
                    pass
    time.sleep(0.5)
'''


@pytest.mark.slow
@pytest.mark.redteam
def test_kernels_of_two_notebooks_cannot_reach_each_other(tmp_path):
    """Finding 2: graded two at a time, a kernel that reads the other's connection file and drives it
    over ZeroMQ must not give the other's blank notebook a point."""
    attacker = _notebook(tmp_path / "a", "00_attacker.ipynb", REACH_OTHER_KERNELS)
    victim = _notebook(tmp_path / "b", "00_victim.ipynb", "time.sleep(6)", "time.sleep(6)")
    done, rows = _grade(tmp_path, [attacker, victim], "--jobs", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert rows["00_victim.ipynb"]["points"] == 0 and rows["00_attacker.ipynb"]["points"] == 0, rows
    assert rows["00_victim.ipynb"]["status"] == rows["00_attacker.ipynb"]["status"] == "graded", rows


@pytest.mark.slow
@pytest.mark.redteam
def test_one_kernels_processes_do_not_starve_another(tmp_path):
    """Finding 3: a kernel that uses up its process limit leaves the other kernel's limit whole."""
    bomb = _notebook(tmp_path / "a", "00_bomb.ipynb",
                     "def hold():\n    time.sleep(600)\nfor _ in range(2000):\n    try:\n"
                     "        threading.Thread(target=hold, daemon=True).start()\n        if os.fork() == 0:\n"
                     "            time.sleep(600)\n            os._exit(0)\n    except (OSError, RuntimeError):\n        pass",
                     "time.sleep(7)", "time.sleep(7)")
    (tmp_path / "b").mkdir()
    solved = tmp_path / "b" / "00_solved.ipynb"
    nbformat.write(nbformat.read(ROOT / "solutions" / "00_why_sparse_attention.ipynb", as_version=4), solved)
    done, rows = _grade(tmp_path, [bomb, solved], "--jobs", "2", "--nproc", "64")
    assert done.returncode == 0, done.stderr[-2000:]
    assert rows["00_solved.ipynb"]["points"] == 3, rows["00_solved.ipynb"]


@pytest.mark.slow
@pytest.mark.redteam
def test_kernels_that_cannot_be_kept_apart_run_one_at_a_time(tmp_path):
    """Findings 2 and 3 where kernels share one user (root with --allow-root-kernels here; an ordinary
    user elsewhere): graded one at a time, and the output says so."""
    if os.geteuid() != 0 or not runner.closed_paths():
        pytest.skip("needs a grader run as root with its Python inside a folder closed to others")
    attacker = _notebook(tmp_path / "a", "00_attacker.ipynb", REACH_OTHER_KERNELS)
    victim = _notebook(tmp_path / "b", "00_victim.ipynb", "time.sleep(3)")
    done, rows = _grade(tmp_path, [attacker, victim], "--jobs", "2", "--allow-root-kernels",
                        TUTOR_GRADE_NO_NAMESPACES="1")
    assert done.returncode == 0 and b"one notebook at a time" in done.stderr, done.stderr[-2000:]
    assert rows["00_victim.ipynb"]["points"] == 0 and rows["00_victim.ipynb"]["status"] == "graded"


@pytest.mark.slow
@pytest.mark.redteam
def test_links_to_someone_elses_notebook_are_refused(tmp_path):
    """Finding 4: a symbolic or hard link to a solved notebook gets a row saying so, and no point."""
    solved = tmp_path / "theirs" / "00_solved.ipynb"
    solved.parent.mkdir()
    nbformat.write(nbformat.read(ROOT / "solutions" / "00_why_sparse_attention.ipynb", as_version=4), solved)
    mine = tmp_path / "mine"
    mine.mkdir()
    os.symlink(ROOT / "solutions" / "01_dense_masked_attention.ipynb", mine / "01_mine.ipynb")
    os.link(solved, mine / "00_mine.ipynb")
    done, rows = _grade(tmp_path, [mine])
    assert done.returncode == 0, done.stderr[-2000:]
    assert {name: (row["status"], row["points"]) for name, row in rows.items()} == {
        "00_mine.ipynb": ("refused", 0), "01_mine.ipynb": ("refused", 0)}
    assert "hard link" in rows["00_mine.ipynb"]["note"] and "symbolic link" in rows["01_mine.ipynb"]["note"]


AUTOGRAD_ROUTES = '''
routes = [
    lambda p, dp: (lambda s: torch.autograd.grad(torch.softmax(s, -1), s, dp)[0])(p.log().clone().requires_grad_()),
    lambda p, dp: (lambda s: (torch.softmax(s, -1).backward(dp), s.grad)[1])(p.log().clone().requires_grad_()),
    lambda p, dp: torch.func.vjp(lambda s: torch.softmax(s, -1), p.log())[1](dp)[0],
    lambda p, dp: torch.func.grad(lambda s: (torch.softmax(s, -1) * dp).sum())(p.log()),
    lambda p, dp: torch._softmax_backward_data(dp, p, -1, p.dtype),
    lambda p, dp: torch.ops.aten._softmax_backward_data.default(dp, p, -1, p.dtype),
    lambda p, dp: torch.autograd.functional.vjp(lambda s: torch.softmax(s, -1), p.log(), dp)[1],
    lambda p, dp: (lambda s: torch.softmax(s, -1).grad_fn(dp))(p.log().clone().requires_grad_()),
    lambda p, dp: (lambda s: (torch.enable_grad().__enter__(), torch.autograd.grad(torch.softmax(s, -1), s, dp)[0])[1])(
        p.log().clone().requires_grad_()),
]
def softmax_backward(p, dp):
    for route in routes:
        try:
            return route(p, dp)
        except Exception:
            pass
    return dp
exercises.question("07.q1").check(softmax_backward)
'''


@pytest.mark.slow
@pytest.mark.redteam
def test_course_functions_and_autograd_under_other_names_get_nothing(tmp_path):
    """Finding 5: a course function that computes the answer (``hybrid_pairs`` for 00.q2) and every route
    to autograd in a backward question (07.q1) are refused in the kernel."""
    sub = tmp_path / "sub"
    _notebook(sub, "00_closed_form.ipynb", "from tutor.costs import hybrid_pairs as hp",
              answers(WRONG_MASK, "lambda T, window: hp(T, window)"))
    nb07 = sub / "07_routes.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(SETUP), new_code_cell(AUTOGRAD_ROUTES)],
                                metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                         "language": "python"}}), nb07)
    done, rows = _grade(tmp_path, [sub])
    assert done.returncode == 0, done.stderr[-2000:]
    assert {n: (r["status"], r["points"]) for n, r in rows.items()} == {
        "00_closed_form.ipynb": ("graded", 0), "07_routes.ipynb": ("graded", 0)}, rows


def _course_functions():
    """Every function (public and private) of the floors below the teaching aids, by dotted name."""
    import importlib
    import pkgutil
    import types
    import tutor
    found = {}
    for info in pkgutil.walk_packages(tutor.__path__, "tutor."):
        floor = info.name.split(".")[1]
        if floor not in ("masks", "patterns", "costs", "attention", "conventions", "distributed"):
            continue
        if info.name in ("tutor.distributed.launch", "tutor.distributed.demo", "tutor.distributed.encoder"):
            continue                          # they start processes; none returns an answer in this one
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            continue
        for fn in vars(module).values():
            if isinstance(fn, types.FunctionType) and fn.__module__ == module.__name__:
                found[f"{module.__name__}.{fn.__qualname__}"] = fn
    return found


@pytest.mark.slow
@pytest.mark.redteam
def test_every_course_function_that_computes_an_answer_is_forbidden(monkeypatch):
    """Finding 5, by what a function computes: each course function that passes a question's own checker
    when called with the answer's arguments (by position or by name) is one the question watches."""
    import inspect
    import warnings
    from tutor import exercises
    from tutor.exercises.problem import FunctionProblem
    monkeypatch.setenv("TUTOR_CHECK_TIME_LIMIT", "1")
    functions = _course_functions()
    unwatched = {}
    for q in exercises.questions():
        if not isinstance(q, FunctionProblem):
            continue
        names = list(inspect.signature(q.reference).parameters)
        watched = {id(getattr(fn, "__wrapped__", fn)) for fn in q.watched()}
        for dotted, fn in functions.items():
            try:
                signature = inspect.signature(fn)
            except (TypeError, ValueError):
                continue
            callers = []
            try:
                signature.bind(*names)
                callers.append(fn)
            except TypeError:
                pass
            try:
                signature.bind(**dict.fromkeys(names))
                callers.append(lambda *a, fn=fn: fn(**dict(zip(names, a))))
            except TypeError:
                pass
            for caller in callers:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = q.judge(caller)
                if result.status == "correct" and id(fn) not in watched:
                    unwatched.setdefault(q.id, []).append(dotted)
    assert unwatched == {}, unwatched


DEFLATED_REPLY = '''
import zipfile, io
import tutor.grading.child as c
def call(qid, inp, out, seconds, probe=None):
    buffer = io.BytesIO()
    torch.save({"value": torch.ones(256 << 20, dtype=torch.uint8), "after": [], "error": None}, buffer)
    with zipfile.ZipFile(buffer) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, zin.read(item.filename))
c.call = call
'''


@pytest.mark.slow
@pytest.mark.redteam
def test_replies_that_expand_in_the_grader_are_refused(tmp_path):
    """Findings 6-8: shared nesting (a value), an expanded tensor (an answer) and a deflated reply of
    256 MiB (the kernel's side replaced) cost the grader little and give nothing."""
    sub = tmp_path / "a"
    _notebook(sub, "00_expand.ipynb",
              "def mask(T, window):\n    x = torch.zeros(1, dtype=torch.bool)\n    return x.set_(torch.ones(1, dtype=torch.bool).expand(25000, 20000))",
              "nested = [0] * 8\nfor _ in range(7):\n    nested = [nested] * 8",
              "q1.check(mask)\nq3.check(nested)")
    deflate = _notebook(tmp_path / "b", "00_deflate.ipynb", DEFLATED_REPLY, answers(WRONG_MASK, "lambda T, window: 0"))
    start = time.monotonic()
    done, rows = _grade(tmp_path, [sub, deflate.parent], "--jobs", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {n: (r["status"], r["points"]) for n, r in rows.items()} == {
        "00_expand.ipynb": ("graded", 0), "00_deflate.ipynb": ("graded", 0)}, rows
    assert "could not be sent back" in json.dumps(rows["00_deflate.ipynb"])
    assert time.monotonic() - start < 120


ESCAPE = '''
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execve("/bin/sleep", ["sleep", "{mark}"], {{}})
    os._exit(0)
time.sleep(0.5)
os.kill(os.getppid(), signal.SIGKILL)
'''


@pytest.mark.slow
@pytest.mark.redteam
@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "fallback"])
def test_a_process_that_kills_its_jail_and_reexecs_does_not_survive(tmp_path, namespaces):
    """Finding 9: a kernel kills its jail, forks, setsid()s and re-execs with a clean environment: it is
    still caught (its cgroup), with and without namespaces."""
    mark = "4243.5" if namespaces else "4244.5"
    nb = _notebook(tmp_path / "a", "00_escape.ipynb", ESCAPE.format(mark=mark), "time.sleep(3)",
                   answers(WRONG_MASK, "lambda T, window: 0"))
    options, env = (), {}
    if not namespaces:
        env = {"TUTOR_GRADE_NO_NAMESPACES": "1"}
        if os.geteuid() == 0 and runner.closed_paths():
            options = ("--allow-root-kernels",)      # the fallback cannot expose a Python under /root
    done, rows = _grade(tmp_path, [nb], *options, **env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert rows["00_escape.ipynb"]["points"] == 0
    time.sleep(3)
    assert _processes_mentioning(mark) == []


@pytest.mark.parametrize("option, value", [("--timeout", "-1"), ("--timeout", "0"), ("--timeout", "nan"),
                                           ("--timeout", "inf"), ("--deadline", "nan"), ("--deadline", "0"),
                                           ("--nproc", "0"), ("--memory-mb", "1"), ("--jobs", "0"),
                                           ("--jobs", "two")])
def test_limits_that_would_vanish_or_break_every_kernel_are_refused(tmp_path, capsys, option, value):
    """Finding 15: a limit that disappears (-1, 0, nan) or makes every notebook fail is a usage error."""
    from tutor import grading
    with pytest.raises(SystemExit) as stop:
        grading.main([str(tmp_path), option, value])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and option in err and repr(value) in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.redteam
def test_names_that_forge_rows_or_break_printing(tmp_path):
    """Findings 10 and 14: names with newlines, fake rows, terminal escapes and undecodable bytes are
    escaped in the table; under a strict ASCII stdout the JSON is written and printing does not fail."""
    sub = tmp_path / "sub"
    sub.mkdir()
    slash = "\u2215".encode()                       # a file name holds no "/": a look-alike
    fake = b"00_\xff\n\x1b[2J00.q1  correct  1" + slash + b"1\nTOTAL  100.0 %  3" + slash + b"3\x1b]0;owned\x07.ipynb"
    nb = new_notebook(cells=[new_code_cell("x = 1")])
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    with open(os.path.join(os.fsencode(sub), fake), "w") as f:
        nbformat.write(nb, f)
    done, rows = _grade(tmp_path, [sub], PYTHONIOENCODING="ascii:strict")
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(rows) == 1 and next(iter(rows.values()))["points"] == 0
    table = done.stdout.decode("ascii")
    assert "\x1b" not in table and "\x07" not in table and "\\x1b" in table
    assert [line for line in table.splitlines() if line.startswith("TOTAL")] == [table.splitlines()[-1]]
    assert not any("correct" in line and "not attempted" not in line for line in table.splitlines())
    assert b"Traceback" not in done.stderr


LOOK_AROUND = '''
token = {token!r}
for folder in ("/tmp", "/var/tmp", "/dev/shm", "."):
    try:
        open(os.path.join(folder, "left_" + token), "w").write("x")
    except OSError:
        pass
others = os.path.exists({victim!r}) or os.path.exists(os.path.dirname({victim!r}))
cmdlines = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmdlines.append(open(f"/proc/{{pid}}/cmdline", "rb").read())
    except OSError:
        pass
grader = any(b"secret_victim" in c or b"tutor grade" in c.replace(b"\\0", b" ") for c in cmdlines)
disk = os.statvfs(".")
quota = disk.f_blocks * disk.f_frsize <= 2 << 30
def mask(T, window):
    raise RuntimeError(f"seen: others={{others}} grader={{grader}} quota={{quota}}")
q1.check(mask)
'''


@pytest.mark.slow
@pytest.mark.redteam
def test_a_kernel_sees_no_other_submission_no_grader_and_leaves_nothing(tmp_path):
    """Finding 13: in the namespace mode a kernel has its own /tmp, /var/tmp and /dev/shm (nothing left
    there survives it), a folder with a quota, and sees neither the other submissions nor the grader."""
    if "namespace" not in runner.isolation():
        pytest.skip("needs unshare (the fallback cannot hide anything from a kernel)")
    token = os.urandom(4).hex()
    victim = _notebook(tmp_path / "b", "00_secret_victim.ipynb", "x = 1")
    spy = _notebook(tmp_path / "a", "00_spy.ipynb", LOOK_AROUND.format(token=token, victim=str(victim)))
    done, rows = _grade(tmp_path, [spy.parent, victim.parent])
    assert done.returncode == 0, done.stderr[-2000:]
    message = rows["00_spy.ipynb"]["questions"][0]["message"]
    assert "seen: others=False grader=False" in message, message
    if os.geteuid() == 0:
        assert "quota=True" in message, message
    left = [Path(folder) / f"left_{token}" for folder in ("/tmp", "/var/tmp", "/dev/shm")]
    assert [p for p in left if p.exists()] == []


@pytest.mark.slow
@pytest.mark.redteam
def test_a_deep_tree_of_folders_is_removed_and_the_cgroup_too(tmp_path):
    """Finding 11: 3000 nested folders in the kernel's folder: cleanup removes them all (and its cgroup)."""
    nb = _notebook(tmp_path / "a", "00_deep.ipynb",
                   "for _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')", answers(WRONG_MASK, "lambda T, window: 0"))
    cgroups = set(Path("/sys/fs/cgroup/pids").glob("tutor-grade-*"))
    done, rows = _grade(tmp_path, [nb])
    assert done.returncode == 0 and rows["00_deep.ipynb"]["status"] == "graded", done.stderr[-2000:]
    assert list((tmp_path / "tmp").iterdir()) == []
    assert set(Path("/sys/fs/cgroup/pids").glob("tutor-grade-*")) <= cgroups


@pytest.mark.parametrize("qid", ["07.q2", "07.q3", "07.q4"])
@pytest.mark.parametrize("form", ["float64", "meta", "sparse"])
def test_gradients_of_another_dtype_device_or_layout_are_judged_not_crashed(qid, form):
    """Finding 16: the missing-scale hint compared before dtype and device were checked; now such an
    answer is judged incorrect with the reason, never "the checker could not judge this answer"."""
    from tutor import exercises
    q = exercises.question(qid)
    change = {"float64": lambda t: t.double(), "meta": lambda t: t.to("meta"),
              "sparse": lambda t: t.to_sparse()}[form]

    def answer(*args):
        return tuple(change(t) for t in q.reference(*args))
    result = q.judge(answer)
    assert result.status == "incorrect" and "could not judge" not in result.message, result.message


@pytest.mark.parametrize("answer", [(10 ** 30, 10 ** 30, False), (-10 ** 30, 10 ** 30, True),
                                    (10 ** 5000, 0, False), "x" * (60 << 20), ("y" * (60 << 20), 1, False)])
def test_huge_numbers_and_strings_are_judged_briefly(answer):
    """Finding 17: 09.q1 with huge ints is judged (no OverflowError), and a 60 MB string is not copied
    whole into the message."""
    from tutor import exercises
    result = exercises.question("09.q1").judge(lambda library, value: answer)
    assert "could not judge" not in result.message and len(result.message) < 2000, result.message[:300]
    assert result.status == "incorrect"


def test_progress_follows_a_linked_file_and_a_held_lock_costs_little(tmp_path, monkeypatch):
    """Finding 19: progress.json as a symbolic link is updated where it points (the link stays); a lock
    another process holds costs the first check about a second and later ones nothing."""
    import fcntl
    import warnings
    from tutor.exercises import feedback, progress
    target = tmp_path / "kept" / "real.json"
    target.parent.mkdir()
    link = tmp_path / "progress.json"
    os.symlink(target, link)
    monkeypatch.setenv("TUTOR_PROGRESS_FILE", str(link))
    progress.record(feedback.Result("00.q1", "correct", "ok"))
    assert link.is_symlink() and progress.load(target)["questions"]["00.q1"]["solved"]

    other = tmp_path / "other.json"
    monkeypatch.setenv("TUTOR_PROGRESS_FILE", str(other))
    holder = os.open(f"{other}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        start = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(5):
                progress.record(feedback.Result("00.q2", "correct", "ok"))
        assert time.monotonic() - start < 3
    finally:
        os.close(holder)


@pytest.mark.parametrize("qid", ["07.q1", "07.q2", "07.q3", "07.q4", "08.q2", "09.q2"])
def test_a_tensor_subclass_that_lies_about_comparisons_is_not_accepted(qid):
    """Finding 18: in a learner's own kernel (check(), no grader), a subclass whose __torch_function__
    says every comparison holds is judged incorrect."""
    from tutor import exercises

    class Liar(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in ("isclose", "allclose", "equal", "eq", "__eq__"):
                if name in ("allclose", "equal"):
                    return True
                return torch.ones(args[0].shape, dtype=torch.bool)
            return super().__torch_function__(func, types, args, kwargs or {})

    from concurrent.futures import ThreadPoolExecutor
    q = exercises.question(qid)

    def lie(x):
        return torch.zeros_like(x).as_subclass(Liar) if isinstance(x, torch.Tensor) else x

    def answer(*args):                                  # the reference runs in another thread only for the shapes
        with ThreadPoolExecutor(1) as pool:
            got = pool.submit(q.reference, *args).result()
        return tuple(lie(g) for g in got) if isinstance(got, tuple) else lie(got)
    result = q.judge(answer)
    assert result.status == "incorrect" and "subclass" in result.message, result.message


def _grader_peak_mib(nb: Path, tmp_path: Path) -> tuple:
    """``(peak resident MiB of the grader process, its JSON row)`` for grading ``nb`` alone."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TUTOR_PROGRESS_FILE=str(tmp_path / "p.json"))
    grader = subprocess.Popen([sys.executable, "-m", "tutor", "grade", str(nb), "--json", str(tmp_path / "g.json")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while grader.poll() is None:
        try:
            status = Path(f"/proc/{grader.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]) >> 10)
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.1)
    assert grader.returncode == 0
    return peak, json.loads((tmp_path / "g.json").read_text())["notebooks"][0]


@pytest.mark.slow
@pytest.mark.redteam
def test_huge_display_messages_cost_the_grader_nothing(tmp_path):
    """Finding 12: three 100 MB display() messages are dropped unread by the grader's sockets: its peak
    memory stays that of a notebook that displays nothing, and the notebook is still graded."""
    small = _notebook(tmp_path / "a", "00_small.ipynb", "x = 1", "q3.check(1)")
    big = _notebook(tmp_path / "b", "00_display.ipynb",
                    "from IPython.display import display\nfor _ in range(3):\n"
                    "    display({'text/plain': 'x' * (100 << 20)}, raw=True)", "q3.check(1)")
    base, _ = _grader_peak_mib(small, tmp_path)
    peak, row = _grader_peak_mib(big, tmp_path)
    assert row["status"] == "graded" and row["questions"][2]["message"] != "never checked", row
    assert peak < base + 100, f"the grader peaked at {peak} MiB, {base} MiB for a notebook that displays nothing"
