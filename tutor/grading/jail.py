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

    As PID 1 of a PID namespace there is nothing to do: the kernel kills the namespace when we exit
    (and /proc, not remounted, shows the host's processes, not ours)."""
    if os.getpid() == 1:
        return
    for _ in range(50):
        below, frontier = set(), {root}
        while frontier:
            frontier = _children_of(frontier) - below
            below |= frontier
        if not below:
            return
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)
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


def expose(paths, writable=()) -> None:
    """Cover each closed ancestor of ``paths`` and ``writable`` with an empty tmpfs and bind those
    paths back at the same place (``paths`` read-only). Only as root in a private mount namespace;
    raises ``OSError`` when a mount fails."""
    def mount(*args: str) -> None:
        done = subprocess.run(["mount", *args], capture_output=True, timeout=30)
        if done.returncode != 0:
            raise OSError(f"mount {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    by_closed = {}
    for path, ro in [(p, True) for p in paths] + [(p, False) for p in writable]:
        closed = closed_ancestor(path)
        if closed is not None:
            by_closed.setdefault(closed, []).append((os.path.abspath(path), ro))
    stage = tempfile.mkdtemp(prefix="tutor-expose-", dir="/")
    try:
        for closed, inside in sorted(by_closed.items()):
            staged = []
            for k, (path, ro) in enumerate(inside):
                spot = os.path.join(stage, str(len(os.listdir(stage))))
                os.mkdir(spot)
                mount("--bind", path, spot)
                staged.append((spot, path, ro))
            mount("-t", "tmpfs", "-o", "mode=755,size=1m", "tmpfs", closed)
            for spot, path, ro in staged:
                os.makedirs(path, exist_ok=True)
                mount("--move", spot, path)
                if ro:
                    mount("-o", "remount,bind,ro", path)
                os.rmdir(spot)
    finally:
        try:
            os.rmdir(stage)
        except OSError:
            pass


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
    if opts.expose or opts.expose_rw:
        try:
            expose(opts.expose, opts.expose_rw)
        except OSError as exc:                 # never run a kernel that cannot see its runtime
            print(f"jail: cannot expose {opts.expose}: {exc}", file=sys.stderr)
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
