"""Is this Python ready for the course? Each check returns a ``Check`` (data), never prints.

``run_checks()`` runs them all; ``format_checks`` turns them into lines such as
``  OK       torch        2.13.0+cpu (CPU build)`` or ``  MISSING  nbval  ...  -> pip install ...``.
Package versions come from installed metadata, so nothing heavy is imported except torch.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

OK, MISSING = "OK", "MISSING"
SETUP_HINT = "run `bash setup.sh` from the repository root"
WIDGET_EXT = ("@jupyter-widgets", "jupyterlab-manager")   # labextension folder of jupyterlab_widgets


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, OK or MISSING, what was found, how to fix it."""
    name: str
    status: str
    detail: str
    hint: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def package_version(dist: str) -> Optional[str]:
    """Installed version of distribution ``dist``, or None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def version_tuple(version: str) -> Tuple[int, ...]:
    """Leading numeric release of a version string: "2.13.0+cpu" -> (2, 13, 0), "8.1.0rc1" -> (8, 1)."""
    parts = []
    for piece in version.split("+")[0].split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def check_python(version_info: Sequence[int] = tuple(sys.version_info[:3]),
                 minimum: Tuple[int, int] = (3, 10)) -> Check:
    """Python must be at least ``minimum``."""
    found = ".".join(str(p) for p in version_info[:3])
    if tuple(version_info[:2]) >= minimum:
        return Check("python", OK, found)
    return Check("python", MISSING, f"{found} is too old",
                 f"install Python >= {minimum[0]}.{minimum[1]}")


def check_package(dist: str, minimum: Optional[str] = None, hint: Optional[str] = None,
                  version_of: Callable[[str], Optional[str]] = package_version) -> Check:
    """Distribution ``dist`` is installed (at ``minimum`` or newer, when given)."""
    need = f"{dist}>={minimum}" if minimum else dist
    hint = hint or f"pip install '{need}'  (or {SETUP_HINT})"
    found = version_of(dist)
    if found is None:
        return Check(dist, MISSING, "not installed", hint)
    if minimum and version_tuple(found) < version_tuple(minimum):
        return Check(dist, MISSING, f"{found} is older than {minimum}", hint)
    return Check(dist, OK, found)


def torch_build(cuda: Optional[str], hip: Optional[str]) -> str:
    """Human name of a torch build from ``torch.version.cuda`` / ``torch.version.hip``."""
    if cuda:
        return f"CUDA {cuda} build"
    if hip:
        return f"ROCm {hip} build"
    return "CPU build"


def check_torch(minimum: str = "2.5") -> Check:
    """torch imports, is new enough, and says which build it is."""
    try:
        import torch
    except ImportError as exc:
        return Check("torch", MISSING, f"cannot import ({exc})", SETUP_HINT + " (installs a CPU build)")
    build = torch_build(getattr(torch.version, "cuda", None), getattr(torch.version, "hip", None))
    if version_tuple(torch.__version__) < version_tuple(minimum):
        return Check("torch", MISSING, f"{torch.__version__} is older than {minimum}", SETUP_HINT)
    return Check("torch", OK, f"{torch.__version__} ({build})")


def check_device() -> Check:
    """The device notebooks will use: the CUDA GPU's name, or the CPU and its thread count."""
    try:
        import torch
    except ImportError:
        return Check("device", MISSING, "torch is not installed", SETUP_HINT)
    if torch.cuda.is_available():
        return Check("device", OK, f"cuda: {torch.cuda.get_device_name(0)}")
    return Check("device", OK, f"cpu, {torch.get_num_threads()} threads (no CUDA GPU found)")


def labextension_dirs() -> List[Path]:
    """Folders JupyterLab reads prebuilt extensions from, this environment's own first."""
    dirs = [Path(sys.prefix) / "share" / "jupyter" / "labextensions"]
    try:
        from jupyter_core.paths import jupyter_path
        dirs += [Path(p) for p in jupyter_path("labextensions") if Path(p) not in dirs]
    except ImportError:
        pass
    return dirs


def check_widget_extension(dirs: Optional[Sequence[Path]] = None,
                           version_of: Callable[[str], Optional[str]] = package_version) -> Check:
    """The JupyterLab widget manager (package ``jupyterlab_widgets`` and its labextension folder)."""
    name = "widgets extension"
    found = version_of("jupyterlab_widgets")
    if found is None:
        return Check(name, MISSING, "jupyterlab_widgets is not installed: sliders will not render",
                     "pip install 'ipywidgets>=8'  (brings jupyterlab_widgets)")
    for d in (labextension_dirs() if dirs is None else dirs):
        ext = Path(d).joinpath(*WIDGET_EXT)
        if ext.is_dir():
            return Check(name, OK, f"jupyterlab_widgets {found} ({ext})")
    return Check(name, MISSING, f"jupyterlab_widgets {found} is installed but its labextension "
                 f"{'/'.join(WIDGET_EXT)} is not in this environment",
                 "pip install --force-reinstall jupyterlab_widgets")


def run_checks() -> List[Check]:
    """Every check, in report order."""
    dev = "pip install -e '.[dev]'  (or " + SETUP_HINT + ")"
    return [check_python(), check_torch(), check_device(), check_widget_extension(),
            check_package("jupyterlab", "4"), check_package("ipywidgets", "8"),
            check_package("matplotlib"), check_package("nbval", hint=dev)]


def format_checks(checks: Sequence[Check]) -> List[str]:
    """One line per check: status, name, what was found, and the fix when something is missing."""
    width = max(len(c.name) for c in checks)
    return [f"  {c.status:<8} {c.name:<{width}}  {c.detail}" + (f"\n           -> {c.hint}" if c.hint else "")
            for c in checks]
