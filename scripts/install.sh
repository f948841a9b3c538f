#!/usr/bin/env bash
# Install policykd and its dependencies into ./.venv (or into $POLICYKD_PYTHON's environment if set).
#
# torch: an existing torch in that environment is kept as it is. Otherwise a CPU build is installed:
# the local CPU wheel when pip can find one (find-links / a local index), else PyTorch's CPU index,
# never the multi-gigabyte CUDA build that a plain `pip install torch` pulls on Linux.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${POLICYKD_PYTHON:-}" ]]; then
  PY="$POLICYKD_PYTHON"
else
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  PY=.venv/bin/python
fi

HAS_TORCH=0
if "$PY" -c "import torch" 2>/dev/null; then
  HAS_TORCH=1
  TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"
  # pyproject.toml asks for torch>=2.1,<3: a torch outside that range would make pip replace it (on Linux with the
  # multi-gigabyte CUDA build), so stop here, before anything is installed, and let its owner choose.
  if ! "$PY" -c "import sys, torch; v = tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(not ((2, 1) <= v < (3, 0)))"; then
    echo "install: this environment has torch $TORCH_VERSION, and policykd needs torch>=2.1,<3; upgrade it yourself (a CPU build: pip install 'torch>=2.1,<3' --index-url https://download.pytorch.org/whl/cpu) or install into a fresh venv; nothing was installed" >&2
    exit 1
  fi
fi
"$PY" -m pip install --quiet --upgrade pip

if [[ "$HAS_TORCH" == 1 ]]; then
  echo "install: keeping the installed torch $TORCH_VERSION"
elif "$PY" -m pip install --quiet --only-binary=:all: "torch==2.13.0+cpu" 2>/dev/null; then
  echo "install: torch 2.13.0+cpu"
else
  "$PY" -m pip install --quiet "torch>=2.1,<3" --index-url https://download.pytorch.org/whl/cpu
fi

"$PY" -m pip install --quiet -e ".[dev]"
echo "install: done ($("$PY" -c 'import policykd, torch; print("policykd", policykd.__version__, "torch", torch.__version__)'))"
