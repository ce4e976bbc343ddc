#!/usr/bin/env bash
# The one set-up command of the course. Run from anywhere; safe to run again.
#
#   bash setup.sh          # install everything the course and its tests need
#   bash setup.sh --open   # ... then open the course in JupyterLab
#
# Steps, each skipped when already done:
#   1. torch, CPU build, first (so step 2 never pulls CUDA wheels): pip install "$TORCH_SPEC"
#   2. pip install -e ".[dev]"   (the tutor package, notebooks' and tests' dependencies);
#      on Linux x86-64 ".[dev,gpu]": triton, whose interpreter runs the Triton kernel's tests on CPU;
#      with TUTOR_PEERS=1 also "peers": transformers and local-attention (notebook 09, tutor.interop).
#      Skipped when .setup-stamp shows the same Python, extras and pyproject.toml installed from
#      this checkout last time (delete .setup-stamp to force it)
#   3. Debian's chromium for the browser tests (apt-get, as root only; skipped otherwise)
#   4. a `python3` Jupyter kernel that runs this Python
#   5. `python -m tutor`: the course map and an environment check
#
# Environment variables:
#   PYTHON            interpreter to install into (default: python, else python3)
#   TORCH_SPEC        torch requirement (default: torch==2.13.0). A torch that already satisfies
#                     it is kept, so a CUDA build you installed yourself stays.
#   TORCH_INDEX_URL   passed to pip as --index-url for torch only. On a stock Linux machine PyPI's
#                     torch is the CUDA build; for the CPU build use
#                     TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash setup.sh
#   TUTOR_SKIP_CHROMIUM=1   do not install chromium (browser tests then skip)
#   TUTOR_PEERS=1     also install the `peers` extra (transformers, local-attention): notebook 09's
#                     Longformer parts and the interop tests, which skip without it
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

OPEN=0
for arg in "$@"; do
    case "$arg" in
        --open) OPEN=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "setup.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "${BASH_SOURCE[0]}")"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1   # quieter pip, also as root
say() { printf '[setup] %s\n' "$*"; }

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif command -v python >/dev/null 2>&1; then PY=python
else PY=python3; fi
command -v "$PY" >/dev/null 2>&1 || { echo "setup.sh: cannot find '$PY'; set PYTHON=/path/to/python" >&2; exit 1; }
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "setup.sh: the course needs Python >= 3.10 ($PY is older)" >&2; exit 1; }
say "python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"

# 1. torch, CPU build, before anything that depends on it ------------------------------------
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if "$PY" - "$TORCH_SPEC" <<'EOF'
# torch-check: exit 0 when the installed torch satisfies the requirement in argv[1]
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
req = Requirement(sys.argv[1])
try:
    found = version(req.name)
except PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if req.specifier.contains(found, prereleases=True) else 1)
EOF
then
    say "torch: $("$PY" -c 'import torch; print(torch.__version__)') already satisfies $TORCH_SPEC"
else
    say "installing $TORCH_SPEC${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL} ..."
    "$PY" -m pip install -q "$TORCH_SPEC" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi

# 2. the package and everything else ---------------------------------------------------------
extras="dev"
if [ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ]; then
    extras="dev,gpu"   # triton has wheels only there; its interpreter tests the kernel on CPU
fi
if [ "${TUTOR_PEERS:-0}" = 1 ]; then
    extras="$extras,peers"   # transformers and local-attention: notebook 09 and tutor.interop
fi
STAMP=.setup-stamp   # (git-ignored) what the last install of step 2 was: skip it when nothing changed
stamp_now() {
    "$PY" - "$extras" <<'EOF'
# install-stamp: print what step 2 depends on: this Python, the extras, pyproject.toml's hash,
# and where `import tutor` leads (this checkout's editable install, or somewhere else)
import hashlib, importlib.util, os, sys
spec = importlib.util.find_spec("tutor")
here = os.path.realpath(os.path.join("tutor", "__init__.py"))
where = "this checkout" if spec and spec.origin and os.path.realpath(spec.origin) == here else "elsewhere"
digest = hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest()
print(f"python={sys.executable} extras={sys.argv[1]} pyproject={digest} tutor={where}")
EOF
}
now="$(stamp_now || true)"
if [ -n "$now" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$now" ]; then
    say "tutor package: already installed from this checkout (pyproject.toml unchanged since; delete $STAMP to reinstall)"
else
    say "installing the tutor package and its dependencies: pip install -e \".[$extras]\" ..."
    "$PY" -m pip install -q -e ".[$extras]"
    stamp_now > "$STAMP" 2>/dev/null || rm -f "$STAMP"
fi

# 3. chromium for the browser tests (playwright drives Debian's, never a downloaded browser) ----
if [ -x /usr/bin/chromium ]; then
    say "chromium: /usr/bin/chromium is there"
elif [ "${TUTOR_SKIP_CHROMIUM:-0}" = 1 ]; then
    say "chromium: skipped (TUTOR_SKIP_CHROMIUM=1); browser tests will be skipped"
elif ! command -v apt-get >/dev/null 2>&1; then
    say "chromium: no apt-get here; browser tests will be skipped (install chromium to run them)"
elif [ "$(id -u)" != 0 ]; then
    say "chromium: not root, so not installing it; browser tests will be skipped"
    say "          to run them: sudo apt-get install chromium fonts-liberation"
else
    say "chromium: installing Debian's chromium with apt-get ..."
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; then
        say "chromium: installed"
    else
        say "WARNING: apt-get could not install chromium; browser tests will be skipped"
    fi
fi

# 4. a python3 kernel that runs this very Python ---------------------------------------------
if ! "$PY" - <<'EOF'
# kernel-check: exit 0 when the `python3` kernel resolves to this interpreter
import os, sys
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
try:
    exe = KernelSpecManager().get_kernel_spec("python3").argv[0]
except NoSuchKernel:
    sys.exit(1)
major, minor = sys.version_info[:2]
same = exe in ("python", f"python{major}", f"python{major}.{minor}") or \
    os.path.realpath(exe) == os.path.realpath(sys.executable)
sys.exit(0 if same else 1)
EOF
then
    say "registering the python3 Jupyter kernel for $PY ..."
    "$PY" -m ipykernel install --sys-prefix --name python3 >/dev/null
fi

# 5. what the course will see -----------------------------------------------------------------
say "done. Course map and environment check (python -m tutor):"
if ! "$PY" -m tutor; then
    say "WARNING: the environment check above lists something MISSING"
fi

if [ "$OPEN" = 1 ]; then
    first=notebooks/00_why_sparse_attention.ipynb
    args=(--ServerApp.root_dir="$PWD")     # the whole course in the file browser ...
    if [ -f "$first" ]; then args+=("$first")  # ... with notebook 00 open
    else args+=(--LabApp.default_url=/lab/tree/notebooks); fi
    if [ "$(id -u)" = 0 ]; then args+=(--allow-root); fi
    say "opening the course: jupyter lab (Ctrl-C to stop)"
    exec "$PY" -m jupyter lab "${args[@]}"
fi
say "next: bash setup.sh --open   (or: jupyter lab)   and   python -m pytest"
