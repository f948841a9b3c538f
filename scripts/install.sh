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
"$PY" -m pip install --quiet --upgrade pip

if "$PY" -c "import torch" 2>/dev/null; then
  echo "install: keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif "$PY" -m pip install --quiet --only-binary=:all: "torch==2.13.0+cpu" 2>/dev/null; then
  echo "install: torch 2.13.0+cpu"
else
  "$PY" -m pip install --quiet "torch>=2.1,<3" --index-url https://download.pytorch.org/whl/cpu
fi

"$PY" -m pip install --quiet -e ".[dev]"
echo "install: done ($("$PY" -c 'import policykd, torch; print("policykd", policykd.__version__, "torch", torch.__version__)'))"
