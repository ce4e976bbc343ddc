"""One graded notebook in its own sandboxed kernel: private folder, clean environment, limits,
deadlines, and nothing left running afterwards.

:class:`NotebookKernel` copies the notebook into a fresh private temporary folder and starts a
kernel there (nbclient / jupyter_client) through :mod:`tutor.grading.jail`: a new PID namespace
when ``unshare`` allows it (the kernel then sees no process of the grader or of another notebook,
and the namespace dies with it), else a child subreaper in its own session. The kernel runs with a
clean environment (no variable of the grader's), as ``nobody`` when the grader is root and
``nobody`` may run this Python, under an address-space, process-count (a ``pids`` cgroup where one
can be made, else RLIMIT_NPROC, which binds only a non-root user) and file-size limit. Each cell has a wall-clock limit and the whole
notebook a deadline; on leaving, the kernel's whole process tree is killed, stragglers are found by
a token in their environment, and the folder is removed. The kernel's output is dropped (only
errors are counted): the grader never reads what the notebook prints.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional, Tuple

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from . import jail

TOKEN_ENV = "TUTOR_SANDBOX_TOKEN"
NOBODY = 65534
_UNSHARE: dict = {}


def _unshare_prefix() -> List[str]:
    """``unshare --pid --fork --kill-child`` (with a user namespace when not root) if it works here."""
    if "prefix" not in _UNSHARE:
        _UNSHARE["prefix"] = []
        exe = shutil.which("unshare")
        for extra in ([], ["--user", "--map-root-user"]):
            cmd = [exe, *extra, "--pid", "--fork", "--kill-child"] if exe else None
            try:
                if cmd and subprocess.run(cmd + ["true"], capture_output=True, timeout=10).returncode == 0:
                    _UNSHARE["prefix"] = cmd
                    break
            except (OSError, subprocess.SubprocessError):
                pass
    return list(_UNSHARE["prefix"])


def _nobody_can_run() -> bool:
    """Root only drops the kernel to ``nobody`` when ``nobody`` may run this Python and read tutor."""
    if "nobody" not in _UNSHARE:
        probe = [sys.executable, "-I", jail.__file__, "--uid", str(NOBODY), "--gid", str(NOBODY), "--",
                 sys.executable, "-c", f"import os; os.stat({str(Path(__file__).resolve())!r})"]
        try:
            _UNSHARE["nobody"] = subprocess.run(probe, capture_output=True, timeout=30, cwd="/").returncode == 0
        except (OSError, subprocess.SubprocessError):
            _UNSHARE["nobody"] = False
    return _UNSHARE["nobody"]


def _pids_cgroup(nproc: int) -> Optional[Path]:
    """A fresh ``pids`` cgroup capped at ``nproc`` when this machine lets us make one, else None."""
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if not (base / "cgroup.procs").exists() or not os.access(base, os.W_OK):
            continue
        folder = base / f"tutor-grade-{secrets.token_hex(6)}"
        try:
            folder.mkdir()
            (folder / "pids.max").write_text(str(nproc))
            return folder
        except OSError:
            try:
                folder.rmdir()
            except OSError:
                pass
    return None


def isolation() -> str:
    """How kernels are isolated on this machine, in words: ``"a new PID namespace (unshare)"`` or
    ``"a subreaper in its own session"``."""
    return "a new PID namespace (unshare)" if _unshare_prefix() else "a subreaper in its own session"


class _JailedKernelManager(AsyncKernelManager):
    """Prefixes the kernel command with the jail (and unshare); hands the connection file to the kernel's user."""
    prefix: List[str] = []
    owner: Optional[Tuple[int, int]] = None

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)
        if self.owner is not None:
            os.chown(self.connection_file, *self.owner)
        return list(self.prefix) + cmd


class _QuietClient(NotebookClient):
    """Keeps no output but errors (name only): a notebook cannot fill the grader's memory."""

    def output(self, outs, msg, display_id, cell_index):
        if msg["msg_type"] == "error" and len(outs) < 3:
            ename = str(msg["content"].get("ename", "Error"))[:80]
            out = nbformat.v4.new_output("error", ename=ename, evalue="", traceback=[])
            outs.append(out)
            return out
        return None


def _clean_env(folder: Path, token: str) -> dict:
    package_root = str(Path(__file__).resolve().parents[2])        # the folder holding `tutor`
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(folder),
           "TMPDIR": str(folder), "PYTHONPATH": package_root, "PYTHONDONTWRITEBYTECODE": "1",
           "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(folder / ".mpl"), "IPYTHONDIR": str(folder / ".ipython"),
           "OMP_NUM_THREADS": "2", "TUTOR_PROGRESS_FILE": str(folder / "progress.json"), TOKEN_ENV: token,
           "JUPYTER_PLATFORM_DIRS": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    for name in ("TUTOR_CHECK_TIME_LIMIT", "OMP_WAIT_POLICY"):     # the only settings passed on
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def sweep(token: str) -> int:
    """SIGKILL every process whose environment carries ``token``; returns how many."""
    needle = f"{TOKEN_ENV}={token}".encode()
    killed = 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read():
                    os.kill(int(name), signal.SIGKILL)
                    killed += 1
        except OSError:
            continue
    return killed


class NotebookKernel:
    """Context manager: one notebook's sandboxed kernel (see the module docstring)."""

    def __init__(self, nb, cell_timeout: float = 60, deadline: float = 600, memory_mb: int = 4096,
                 nproc: int = 256, kernel_name: str = "python3"):
        self.nb = nb
        self.cell_timeout, self.deadline = cell_timeout, deadline
        self.memory_mb, self.nproc, self.kernel_name = memory_mb, nproc, kernel_name
        self.expired = False            # the notebook deadline passed and the kernel was killed
        self.dead = False               # the kernel is gone (died, killed, or stuck and stopped)
        self.running_cell = 0

    # ----------------------------------------------------------------- start and stop
    def __enter__(self) -> "NotebookKernel":
        self.folder = Path(tempfile.mkdtemp(prefix="tutor-grade-"))
        self.token = secrets.token_hex(16)
        try:
            self._start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def _start(self) -> None:
        root = os.geteuid() == 0 and _nobody_can_run()
        self.cgroup = _pids_cgroup(self.nproc)
        owner = (NOBODY, NOBODY) if root else None
        self.out_dir = self.folder / "out"
        self.out_dir.mkdir()
        (self.folder / "in").mkdir()                     # written by the grader only
        if owner:
            os.chmod(self.folder, 0o755)
            os.chown(self.out_dir, *owner)
            os.chmod(self.out_dir, 0o700)
            for sub in (".mpl", ".ipython"):
                (self.folder / sub).mkdir()
                os.chown(self.folder / sub, *owner)
        nbformat.write(self.nb, str(self.folder / "notebook.ipynb"))   # the private copy it runs from
        km = _JailedKernelManager(kernel_name=self.kernel_name)
        km.connection_file = str(self.folder / "kernel.json")
        km.owner = owner
        km.prefix = _unshare_prefix() + [sys.executable, "-I", jail.__file__, "--memory-mb", str(self.memory_mb),
                                        "--nproc", str(self.nproc), "--fsize-mb", "512",
                                        *(["--cgroup", str(self.cgroup)] if self.cgroup else []),
                                        *(["--uid", str(NOBODY), "--gid", str(NOBODY)] if root else []), "--"]
        self.km = km
        self.client = _QuietClient(self.nb, km=km, timeout=self.cell_timeout, allow_errors=True,
                                   shutdown_kernel="immediate", startup_timeout=max(60, self.cell_timeout),
                                   on_cell_execute=self._started)
        cwd = self.out_dir                               # so even '..' is this notebook's private folder
        self._setup = self.client.setup_kernel(cwd=str(cwd), env=_clean_env(cwd, self.token), cleanup_kc=True,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._timer = threading.Timer(self.deadline, self._expire)
        self._timer.daemon = True
        self._timer.start()
        self._setup.__enter__()

    def _started(self, cell, cell_index):
        self.running_cell = cell_index + 1

    def _process(self):
        provisioner = getattr(self.km, "provisioner", None)
        return getattr(provisioner, "process", None)

    def _kill_tree(self) -> None:
        process = self._process()
        if process is not None and process.poll() is None and not _unshare_prefix():
            try:                                         # (in a PID namespace SIGKILL below ends it all)
                process.send_signal(signal.SIGTERM)      # the jail kills what it started, then exits
                process.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if process is not None:
            for kill in (lambda: os.killpg(process.pid, signal.SIGKILL), process.kill):
                try:
                    kill()
                except OSError:
                    pass
        sweep(self.token)

    def _expire(self) -> None:
        self.expired = True
        self.dead = True
        self._kill_tree()

    def __exit__(self, *exc) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
        self._kill_tree()
        setup = getattr(self, "_setup", None)
        if setup is not None:
            try:
                setup.__exit__(None, None, None)
            except Exception:
                pass
        for _ in range(3):
            sweep(self.token)
            time.sleep(0.05)
        shutil.rmtree(self.folder, ignore_errors=True)
        cgroup = getattr(self, "cgroup", None)
        if cgroup is not None:
            for _ in range(20):
                try:
                    cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)

    # ----------------------------------------------------------------- running code
    def run_notebook(self) -> Tuple[str, str]:
        """Run every cell in order; ``(status, note)`` with status graded | timeout | kernel died."""
        errors = 0
        for index, cell in enumerate(self.nb.cells):
            if cell.get("cell_type") != "code":
                continue
            status, note = self._execute(cell, index, self.cell_timeout)
            if status != "ok":
                return status, note
            errors += any(o.get("output_type") == "error" for o in cell.get("outputs", []))
        return "graded", f"{errors} cell(s) raised an error" if errors else ""

    def _execute(self, cell, index: int, timeout: float) -> Tuple[str, str]:
        if self.dead:
            return "kernel died", "the kernel had already stopped"
        self.client.timeout = timeout
        try:
            self.client.execute_cell(cell, index)
        except CellTimeoutError:
            self.dead = True
            if self.expired:
                return "timeout", f"the notebook ran past its {self.deadline:g} s limit and was stopped"
            return "timeout", f"cell {index + 1} ran past the {timeout:g} s limit and was stopped"
        except DeadKernelError:
            self.dead = True
            if self.expired:
                return "timeout", f"the notebook ran past its {self.deadline:g} s limit and was stopped"
            return "kernel died", f"the kernel died while running cell {index + 1}"
        except Exception as exc:  # nbclient's own troubles: this notebook only
            self.dead = True
            return "error", f"could not run cell {index + 1}: {type(exc).__name__}: {str(exc)[:200]}"
        if self.expired:
            return "timeout", f"the notebook ran past its {self.deadline:g} s limit and was stopped"
        return "ok", ""

    def run(self, source: str, timeout: float) -> Tuple[str, str]:
        """Run grader code (not part of the notebook) in the kernel; ``("ok", "")`` when it finished."""
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        try:
            status, note = self._execute(cell, len(self.nb.cells) - 1, timeout)
        finally:
            self.nb.cells.pop()
        raised = [o.get("ename", "") for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        return ("raised", raised[0]) if status == "ok" and raised else (status, note)
