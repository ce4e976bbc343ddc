"""Start one graded kernel under limits: ``python jail.py [options] -- KERNEL COMMAND...``.

Run as a plain script (it imports only the standard library, so it starts fast). It sets the
resource limits (address space, processes, file size, no core dumps), joins a ``pids`` cgroup
when the grader made one (root is not bound by the process rlimit), drops root to ``--uid`` /
``--gid`` when asked, becomes a child subreaper (orphans of the kernel's children come back to
it, however they detached), starts the kernel and waits. When the kernel ends, or this process
is told to stop (SIGTERM, SIGHUP), it kills every process below it and exits. Inside a new PID
namespace (``unshare --pid --fork --kill-child``) it is PID 1, and its exit ends the namespace.

In a private mount namespace (``unshare --mount``) and as root, ``--expose PATH`` lets the kernel's
user reach ``PATH`` (read-only) although a folder above it is closed to others (a Python under
``/root``, e.g. pyenv, with ``/root`` at mode 0700): an empty tmpfs (mode 0755) covers the closed
folder and ``PATH`` is bound back in its place, read-only (``--expose-rw``: writable, for the
kernel's own folder under a closed temporary folder). The rest of the closed folder stays hidden.
``--temporary-mb`` gives the kernel empty ``/tmp``, ``/var/tmp`` and ``/dev/shm`` of its own (what
it leaves there vanishes with it), ``--hide`` covers folders (the submissions) with empty ones, and
as PID 1 of its namespace the jail mounts a /proc that shows the namespace's processes only.
"""
import argparse
import ctypes
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

PR_SET_CHILD_SUBREAPER = 36


def _children_of(pids):
    """Every process whose parent is in ``pids`` (read from /proc)."""
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid in pids:
            found.add(int(name))
    return found


def kill_descendants(root: int) -> None:
    """SIGKILL every process below ``root`` until none is left (they come back here as orphans).

    As PID 1 of a PID namespace there is nothing to do: the kernel kills the namespace when we exit."""
    if os.getpid() == 1:
        return

    def below() -> set:
        found, frontier = set(), {root}
        while frontier:
            frontier = _children_of(frontier) - found
            found |= frontier
        return found
    kill_until_gone(below, rounds=50, pause=0.05, reap=True)


def kill_until_gone(find, *, rounds: int, pause: float, reap: bool = False) -> None:
    """SIGKILL the processes ``find()`` names, again and again, until it names none (at most ``rounds``
    times, ``pause`` seconds apart); ``reap``: also collect the ones that were our children."""
    for _ in range(rounds):
        pids = find()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(pause)
        if reap:
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                pass


def closed_ancestor(path: str):
    """The highest folder above ``path`` that other users may not enter, or None."""
    parts = os.path.abspath(path).split(os.sep)[1:]
    for depth in range(1, len(parts)):
        folder = os.sep + os.path.join(*parts[:depth])
        try:
            if not os.stat(folder).st_mode & 0o001:
                return folder
        except OSError:
            return folder
    return None


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, timeout=30)
    if done.returncode != 0:
        raise OSError(f"mount {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")


def cover(folder: str, keep=(), size: str = "1m") -> None:
    """Mount an empty tmpfs (mode 1777 for a temporary folder, else 0755) of ``size`` over ``folder``
    and bind each ``(path, read_only)`` of ``keep`` that lies below it back at the same place."""
    keep = [(os.path.abspath(p), ro) for p, ro in keep
            if os.path.abspath(p).startswith(os.path.abspath(folder).rstrip("/") + "/")]
    stage = tempfile.mkdtemp(prefix="tutor-cover-", dir="/")
    try:
        staged = []
        for k, (path, ro) in enumerate(keep):
            spot = os.path.join(stage, str(k))
            os.mkdir(spot)
            _mount("--rbind", path, spot)
            staged.append((spot, path, ro))
        mode = "1777" if folder in TEMPORARY else "755"
        _mount("-t", "tmpfs", "-o", f"mode={mode},size={size}", "tmpfs", folder)
        for spot, path, ro in staged:
            os.makedirs(path, exist_ok=True)
            _mount("--move", spot, path)
            if ro:
                _mount("-o", "remount,bind,ro", path)
            os.rmdir(spot)
    finally:
        try:
            os.rmdir(stage)
        except OSError:
            pass


#: folders every user may write: each kernel gets empty ones of its own (they vanish with it)
TEMPORARY = ("/tmp", "/var/tmp", "/dev/shm")


def expose(paths, writable=(), hide=(), temporary_mb: int = 0) -> None:
    """In a private mount namespace, as root: fresh temporary folders (``temporary_mb`` each, when
    > 0), the kernel's ``writable`` folder kept; each folder of ``hide`` covered empty; each closed
    ancestor of ``paths`` and ``writable`` covered and those paths bound back (``paths`` read-only).
    Raises ``OSError`` when a mount fails."""
    keep = [(p, True) for p in paths] + [(p, False) for p in writable]
    if temporary_mb > 0:
        for folder in TEMPORARY:
            if os.path.isdir(folder) and not os.path.islink(folder):
                cover(folder, keep, f"{temporary_mb}m")
    for folder in hide:
        if os.path.isdir(folder):
            cover(folder, keep)
    closed = sorted({c for c in (closed_ancestor(p) for p, _ in keep) if c is not None})
    for folder in closed:
        cover(folder, keep)


def mount_proc() -> None:
    """As PID 1 of a new PID namespace with its own mounts: a /proc that shows only this namespace."""
    _mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", "/proc")


def _limit(what: int, value: int) -> None:
    if value > 0:
        try:
            resource.setrlimit(what, (value, value))
        except (ValueError, OSError):
            pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--memory-mb", type=int, default=0)
    ap.add_argument("--nproc", type=int, default=0)
    ap.add_argument("--fsize-mb", type=int, default=0)
    ap.add_argument("--cgroup", default="", help="a pids cgroup folder to join (limits root's processes too)")
    ap.add_argument("--expose", action="append", default=[], help="a path to show read-only (see expose)")
    ap.add_argument("--expose-rw", action="append", default=[], help="a path to show writable (see expose)")
    ap.add_argument("--hide", action="append", default=[], help="a folder to cover with an empty one (see expose)")
    ap.add_argument("--temporary-mb", type=int, default=0, help="fresh /tmp, /var/tmp, /dev/shm of this size")
    ap.add_argument("--uid", type=int, default=-1)
    ap.add_argument("--gid", type=int, default=-1)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    opts = ap.parse_args(argv)
    command = opts.command[1:] if opts.command[:1] == ["--"] else opts.command
    try:
        os.setsid()
    except OSError:
        pass                                   # already a session leader
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if opts.cgroup:
        try:
            with open(os.path.join(opts.cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            pass
    if opts.expose or opts.expose_rw or opts.hide or opts.temporary_mb:
        try:
            expose(opts.expose, opts.expose_rw, opts.hide, opts.temporary_mb)
            if os.getpid() == 1:
                mount_proc()
        except OSError as exc:                 # never run a kernel that cannot see its runtime
            print(f"jail: cannot prepare the kernel's mounts: {exc}", file=sys.stderr)
            return 126
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_AS, opts.memory_mb << 20)
    _limit(resource.RLIMIT_FSIZE, opts.fsize_mb << 20)
    if opts.gid >= 0 and os.getuid() == 0:
        os.setgroups([])
        os.setgid(opts.gid)
    if opts.uid >= 0 and os.getuid() == 0:
        os.setuid(opts.uid)
    _limit(resource.RLIMIT_NPROC, opts.nproc)   # per user: set once we are that user
    # the grader is not our parent (and inside a PID namespace our parent is PID 1): no parent polling
    os.environ.pop("JPY_PARENT_PID", None)
    kernel = os.fork()
    if kernel == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)

    def stop(signum, frame):
        kill_descendants(os.getpid())
        os._exit(128 + signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    signal.signal(signal.SIGINT, lambda signum, frame: os.kill(kernel, signal.SIGINT))  # interrupt
    code = 0
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == kernel:
            code = os.waitstatus_to_exitcode(status)
            break
    kill_descendants(os.getpid())
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
