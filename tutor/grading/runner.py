"""One graded notebook in its own sandboxed kernel: private folder, clean environment, limits,
deadlines, and nothing left running afterwards.

:class:`NotebookKernel` copies the notebook into a fresh private temporary folder and starts a
kernel there (nbclient / jupyter_client) through :mod:`tutor.grading.jail`: a new mount and PID
namespace when ``unshare`` allows it (the kernel then sees no process of the grader or of another
notebook, has temporary folders of its own, and the namespace dies with it), else a child
subreaper in its own session. The kernel runs with a clean environment (no variable of the
grader's), as a user id of its own when the grader is root (a Python inside a folder closed to
others is shown read-only through a mount namespace; without one the grader refuses rather than
run kernels as root, unless ``--allow-root-kernels``: :func:`kernel_user`), under an
address-space, process-count (a ``pids`` cgroup where one can be made, else RLIMIT_NPROC, which
binds only a non-root user) and file-size limit. Each cell has a wall-clock limit and the whole
notebook a deadline; on leaving, the kernel's whole process tree is killed, then every process of
its ``pids`` cgroup (which holds every descendant, however it detached or re-executed itself),
stragglers are found by a token in their environment, and the folder is removed. The kernel's
output is dropped (only errors are counted): the grader never reads what the notebook prints.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import nbformat
import zmq
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from . import jail

TOKEN_ENV = "TUTOR_SANDBOX_TOKEN"
#: set to 1 to grade without namespaces even where ``unshare`` works (the fallback, for tests and CI)
NO_NAMESPACES_ENV = "TUTOR_GRADE_NO_NAMESPACES"
#: user ids the kernels run as when the grader is root, one per running kernel (ids of no account)
KERNEL_UIDS = range(65500, 65400, -1)
#: MiB of each kernel's own /tmp, /var/tmp, /dev/shm (in a mount namespace) and of its folder (root)
DISK_MB = 1024
#: bytes of one message frame from a kernel: a larger one is dropped unread (a display() of 300 MB)
MAX_MESSAGE = 32 << 20
_UNSHARE: dict = {}
_LEASE = threading.Lock()
_LEASED: set = set()
PACKAGE_ROOT = Path(__file__).resolve().parents[2]          # the folder holding `tutor`


class UnsafeKernel(RuntimeError):
    """The grader would have to run the learners' kernels as root; it refuses (see :func:`kernel_user`)."""


def _unshare_prefix() -> List[str]:
    """``unshare --mount --pid --fork --kill-child`` (with a user namespace when not root) if it works
    here and :data:`NO_NAMESPACES_ENV` is not set."""
    if "prefix" not in _UNSHARE:
        _UNSHARE["prefix"] = []
        exe = shutil.which("unshare")
        for extra in ([], ["--user", "--map-root-user"]):
            cmd = [exe, *extra, "--mount", "--pid", "--fork", "--kill-child"] if exe else None
            if not cmd or os.environ.get(NO_NAMESPACES_ENV) == "1":
                break
            try:
                if subprocess.run(cmd + ["true"], capture_output=True, timeout=10).returncode == 0:
                    _UNSHARE["prefix"] = cmd
                    break
            except (OSError, subprocess.SubprocessError):
                pass
    return list(_UNSHARE["prefix"])


def _runtime_paths() -> List[Path]:
    """What a kernel must reach: this Python, its prefixes, the tutor package and torch."""
    import torch
    return [Path(p).resolve() for p in (sys.executable, sys.prefix, sys.base_prefix, PACKAGE_ROOT / "tutor",
                                        Path(torch.__file__).parent)]


def closed_paths() -> List[str]:
    """For each runtime path below a folder that others may not enter (``/root`` at 0700 holding a
    pyenv Python), the child of that folder on the way to it: what a mount namespace must expose."""
    exposed = set()
    for path in _runtime_paths():
        closed = jail.closed_ancestor(str(path))
        if closed is not None and path != Path(closed):
            exposed.add(str(Path(closed) / path.relative_to(closed).parts[0]))
    return sorted(exposed)


def temporary_paths() -> List[str]:
    """Runtime paths below a temporary folder (a checkout under ``/tmp``) and not below a closed one:
    a kernel's own empty temporary folders would hide them, so its mount namespace shows them again,
    read-only."""
    return sorted({str(p) for p in _runtime_paths() if jail.closed_ancestor(str(p)) is None
                   and any(str(p).startswith(f + "/") for f in jail.TEMPORARY)})


def writable_by(uids, roots: List[Path]) -> List[str]:
    """Files and folders under ``roots`` (and the roots' parents) that one of the users ``uids`` may
    change: owned by it, or writable by others. Links are not followed."""
    uids = set(uids)
    found = []
    def changeable(path: str) -> bool:
        try:
            info = os.lstat(path)
        except OSError:
            return False
        return not stat.S_ISLNK(info.st_mode) and (info.st_uid in uids or bool(info.st_mode & 0o002))
    for root in roots:
        found += [str(p) for p in root.parents if changeable(str(p)) and not p.stat().st_mode & stat.S_ISVTX]
        for folder, dirs, files in os.walk(root):
            found += [os.path.join(folder, n) for n in (".", *dirs, *files) if changeable(os.path.join(folder, n))]
            if len(found) > 20:
                break
    return found


@dataclass(frozen=True)
class KernelUser:
    """Who the kernels run as: ``uids`` empty is the grader's own user (then kernels cannot be kept
    apart and the grader runs one at a time); else each running kernel has one of ``uids`` to itself.
    ``expose`` as in :mod:`.jail`."""
    uids: Tuple[int, ...]
    expose: Tuple[str, ...]
    described: str

    @property
    def separate(self) -> bool:
        """Kernels of different notebooks run as different users (they may run at once)."""
        return bool(self.uids)

    def lease(self) -> Optional[int]:
        """A user id no running kernel has (None: the grader's own user); give it back with :meth:`release`."""
        if not self.uids:
            return None
        with _LEASE:
            for uid in self.uids:
                if uid not in _LEASED:
                    _LEASED.add(uid)
                    return uid
        raise RuntimeError(f"more than {len(self.uids)} kernels at once")

    @staticmethod
    def release(uid: Optional[int]) -> None:
        with _LEASE:
            _LEASED.discard(uid)


def _has_account(uid: int) -> bool:
    import pwd
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _probe_user(uid: int, expose: List[str]) -> bool:
    """Can ``uid`` run this Python and read tutor and torch (through ``expose`` in a mount namespace)?"""
    import torch
    files = [str(Path(__file__).resolve()), str(Path(torch.__file__).resolve())]
    probe = [*(_unshare_prefix() if expose else []), sys.executable, "-I", jail.__file__,
             *[a for path in expose for a in ("--expose", path)], "--uid", str(uid), "--gid", str(uid), "--",
             sys.executable, "-I", "-c", f"import os; [os.stat(f) for f in {files!r}]"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=60, cwd="/").returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def kernel_user(allow_root: bool = False) -> KernelUser:
    """Who the kernels run as; never root without ``allow_root``.

    Not root: the grader's own user. Root: one user id of :data:`KERNEL_UIDS` per running kernel
    (no account has them, so kernels cannot read each other's files, connection files included, and
    each has its own process limit); they must be able to run this Python (a Python inside a closed
    folder is exposed read-only through a mount namespace where ``unshare`` allows one) and must not
    be able to change the tutor package or torch. Otherwise
    :class:`UnsafeKernel`, unless ``allow_root`` (``--allow-root-kernels``): then the kernels run as
    root and can change everything, the grader included."""
    key = ("user", allow_root)
    if key in _UNSHARE:
        return _UNSHARE[key]
    if os.geteuid() != 0:
        user = KernelUser((), tuple(temporary_paths()) if _unshare_prefix() else (), "the grader's own user")
    else:
        closed = sorted({*closed_paths(), *temporary_paths()}) if _unshare_prefix() else []
        uids = tuple(u for u in KERNEL_UIDS if not _has_account(u))[:32]
        if uids and _probe_user(uids[0], closed):
            changeable = writable_by(uids, [PACKAGE_ROOT / "tutor", *_runtime_paths()[-1:]])
            if changeable:
                raise UnsafeKernel(f"the kernels' users could change files the grader runs: "
                                   f"{', '.join(changeable[:3])}; make them read-only for others")
            how = f"; {', '.join(closed)} shown read-only in a mount namespace" if closed else ""
            user = KernelUser(uids, tuple(closed), f"a user id of their own ({uids[-1]}-{uids[0]}{how})")
        elif allow_root:
            user = KernelUser((), (), "root (--allow-root-kernels: a kernel can change anything)")
        else:
            where = ", ".join(os.path.dirname(p) for p in closed_paths()) or sys.executable
            raise UnsafeKernel(
                f"refusing to run learners' kernels as root: other users cannot run {sys.executable} "
                f"(it lies under {where}, closed to other users) and no mount namespace can expose it "
                f"(unshare --mount is unavailable or {NO_NAMESPACES_ENV}=1). Install a Python that other "
                f"users may run, run the grader as an ordinary user, or pass --allow-root-kernels to run "
                f"the kernels as root anyway (they could then change the grader and its files).")
    _UNSHARE[key] = user
    return user


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
    """How kernels are isolated on this machine, in words: ``"a new mount and PID namespace (unshare)"`` or
    ``"a subreaper in its own session"``."""
    return "a new mount and PID namespace (unshare)" if _unshare_prefix() else "a subreaper in its own session"


class _JailedKernelManager(AsyncKernelManager):
    """Prefixes the kernel command with the jail (and unshare); hands the connection file to the kernel's user."""
    prefix: List[str] = []
    owner: Optional[Tuple[int, int]] = None

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)
        if self.owner is not None:
            os.chown(self.connection_file, *self.owner)
            os.chmod(self.connection_file, 0o600)        # its key: no other kernel may read it
        return list(self.prefix) + cmd

    def client(self, **kwargs):
        """The client nbclient talks through; its sockets drop a frame larger than MAX_MESSAGE unread."""
        kc = super().client(**kwargs)
        kc.context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)     # applied to each socket made from it
        return kc


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
    package_root = str(PACKAGE_ROOT)
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


def hideable(folders) -> List[str]:
    """The submission ``folders`` a kernel need not see: none holding the package, the runtime or the
    temporary folder."""
    needed = [*_runtime_paths(), Path(tempfile.gettempdir()).resolve()]
    hidden = []
    for folder in {str(Path(f).resolve()) for f in folders}:
        inside = [p for p in needed if p == Path(folder) or Path(folder) in p.parents]
        if folder != "/" and not inside:
            hidden.append(folder)
    return sorted(hidden)


def _run_quietly(*cmd: str) -> bool:
    try:
        return subprocess.run(list(cmd), capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class NotebookKernel:
    """Context manager: one notebook's sandboxed kernel (see the module docstring)."""

    def __init__(self, nb, cell_timeout: float = 60, deadline: float = 600, memory_mb: int = 4096,
                 nproc: int = 256, kernel_name: str = "python3", allow_root: bool = False, hide=()):
        self.nb = nb
        self.cell_timeout, self.deadline = cell_timeout, deadline
        self.memory_mb, self.nproc, self.kernel_name = memory_mb, nproc, kernel_name
        self.allow_root, self.hide = allow_root, tuple(hide)
        self.quota = False              # the kernel's folder is a size-limited tmpfs of its own
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
        user = kernel_user(self.allow_root)             # raises UnsafeKernel rather than run as root
        self.uid = user.lease()
        self.cgroup = _pids_cgroup(self.nproc)
        owner = (self.uid, self.uid) if self.uid is not None else None
        self.out_dir = self.folder / "out"
        self.out_dir.mkdir()
        (self.folder / "in").mkdir()                     # written by the grader only
        if owner:                                        # root:  this kernel's group may enter, no other kernel
            for folder in (self.folder, self.folder / "in"):
                os.chown(folder, 0, self.uid)
                os.chmod(folder, 0o750)
            self.quota = _run_quietly("mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0700,uid={self.uid},"
                                      f"gid={self.uid},nosuid,nodev", "tmpfs", str(self.out_dir))
            os.chown(self.out_dir, *owner)
            os.chmod(self.out_dir, 0o700)
            for sub in (".mpl", ".ipython"):
                (self.folder / sub).mkdir()
                os.chown(self.folder / sub, *owner)
        nbformat.write(self.nb, str(self.folder / "notebook.ipynb"))   # the private copy it runs from
        km = _JailedKernelManager(kernel_name=self.kernel_name)
        km.connection_file = str(self.folder / "kernel.json")
        km.owner = owner
        closed_tmp = jail.closed_ancestor(str(self.folder))
        if owner and closed_tmp and not _unshare_prefix():
            raise UnsafeKernel(f"the kernel's folder {self.folder} lies under {closed_tmp}, closed to the kernels' "
                               f"users, and no mount namespace can expose it: set TMPDIR to a folder others may enter")
        km.prefix = _unshare_prefix() + [sys.executable, "-I", jail.__file__, "--memory-mb", str(self.memory_mb),
                                        "--nproc", str(self.nproc), "--fsize-mb", "512",
                                        *(["--cgroup", str(self.cgroup)] if self.cgroup else []),
                                        *[a for path in user.expose for a in ("--expose", path)],
                                        *(["--expose-rw", str(self.folder), "--temporary-mb", str(DISK_MB),
                                           *[a for f in self.hide for a in ("--hide", f)]]
                                          if _unshare_prefix() else []),
                                        *(["--uid", str(self.uid), "--gid", str(self.uid)] if owner else []), "--"]
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
        self._kill_cgroup()

    def _kill_cgroup(self) -> None:
        """SIGKILL every process of the kernel's cgroup until none is left: it holds every descendant,
        however it detached (``setsid``, a dead jail, a re-exec with a clean environment)."""
        cgroup = getattr(self, "cgroup", None)
        if cgroup is None:
            return

        def members() -> List[int]:
            try:
                return [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                return []                              # the cgroup is gone: nothing left to kill
        jail.kill_until_gone(members, rounds=200, pause=0.02)

    def _expire(self) -> None:
        self.expired = True
        self.dead = True
        self._kill_tree()

    def __exit__(self, *exc) -> None:
        for step in (self._stop_timer, self._kill_tree, self._close_setup, self._sweep, self._kill_cgroup,
                     self._remove_folder, self._remove_cgroup):
            try:                                       # each step runs whatever the one before did
                step()
            except Exception:
                pass
        KernelUser.release(getattr(self, "uid", None))

    def _stop_timer(self) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()

    def _close_setup(self) -> None:
        setup = getattr(self, "_setup", None)
        if setup is not None:
            setup.__exit__(None, None, None)

    def _sweep(self) -> None:
        for _ in range(3):
            sweep(self.token)
            time.sleep(0.05)

    def _remove_folder(self) -> None:
        """Remove the kernel's folder, however deep (``rm -rf`` walks what ``shutil.rmtree`` cannot)."""
        if self.quota:
            _run_quietly("umount", "-l", str(self.out_dir))
        try:
            shutil.rmtree(self.folder, ignore_errors=True)
        except RecursionError:
            pass
        if os.path.lexists(self.folder):
            _run_quietly("chmod", "-R", "u+rwX", str(self.folder))
            _run_quietly("rm", "-rf", "--one-file-system", str(self.folder))

    def _remove_cgroup(self) -> None:
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
