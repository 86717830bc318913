#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install fusion-rt into it.
#   scripts/setup-env.sh VENV [EXTRAS]     e.g. scripts/setup-env.sh .venv dev,train
# With the `train` extra, the CPU build of torch is installed first when the venv has no torch,
# so that pip never resolves the multi-GB CUDA build: from this machine's local wheel where one
# is offered (pip's find-links), else from PyTorch's CPU index.
set -euo pipefail
venv=${1:-.venv}
extras=${2:-}
python=${PYTHON:-python3}
torch_version=2.13.0

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv" >&2
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"
pip() { "$py" -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v -E "is ignored: it is neither|^$" >&2 || true; }

if [[ ",$extras," == *",train,"* ]] && ! "$py" -c "import torch" 2>/dev/null; then
  tmp=$(mktemp -d)
  if "$py" -m pip download -q --no-deps --no-index -d "$tmp" "torch==$torch_version" >/dev/null 2>&1; then
    echo "setup: installing torch $torch_version (CPU build, local wheel)" >&2
    pip install "$tmp"/torch-*.whl
  else
    echo "setup: installing torch $torch_version (CPU build, download.pytorch.org)" >&2
    pip install "torch==$torch_version" --index-url https://download.pytorch.org/whl/cpu \
      --extra-index-url https://pypi.org/simple
  fi
  rm -rf "$tmp"
  "$py" -c "import torch" || { echo "setup: torch failed to install" >&2; exit 1; }
fi

spec="."
[ -n "$extras" ] && spec=".[${extras}]"
echo "setup: installing fusion-rt${extras:+[$extras]} (editable)" >&2
"$py" -m pip --disable-pip-version-check -q install -e "$spec" 2>&1 | grep -v -E "is ignored: it is neither" >&2 || true
"$py" -c "import fusion_rt" || { echo "setup: fusion_rt failed to install" >&2; exit 1; }
