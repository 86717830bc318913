#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install fusion-rt into it.
#   scripts/setup-env.sh VENV [EXTRAS]     e.g. scripts/setup-env.sh .venv dev,train
# With the `train` extra, the CPU build of torch is installed first when the venv has no torch,
# so that pip never resolves the multi-GB CUDA build: from this machine's local wheel where one
# is offered (pip's find-links), else from PyTorch's CPU index (pinned to the +cpu build, which
# PyPI does not carry, so an unreachable CPU index fails instead of falling back to CUDA).
# Any failure ends with one line saying what failed and exit status 1, so make writes no stamp.
set -euo pipefail
venv=${1:-.venv}
extras=${2:-}
python=${PYTHON:-python3}
torch_version=2.13.0

fail() { echo "setup: $*" >&2; exit 1; }

if [ ! -e "$venv" ]; then
  echo "setup: creating $venv" >&2
  "$python" -m venv "$venv" || fail "could not create $venv with $python"
elif ! "$venv/bin/python" -c "" 2>/dev/null; then
  echo "setup: $venv is broken (its python does not run): recreating it" >&2
  "$python" -m venv --clear "$venv" || fail "could not recreate $venv with $python (rm -rf $venv and retry)"
fi
py="$venv/bin/python"
# The runtime alone runs on 3.10 (JetPack 6); quantize (the demo) and the tests need onnxruntime >= 1.31, hence 3.11.
minor=10
[[ ",$extras," == *",quantize,"* || ",$extras," == *",dev,"* ]] && minor=11
"$py" -c "import sys; sys.exit(sys.version_info < (3, $minor))" \
  || fail "$venv runs Python $("$py" -c 'import platform; print(platform.python_version())'); fusion-rt${extras:+[$extras]} needs 3.$minor or newer (onnxruntime >= 1.31 for quantization) (rm -rf $venv; PYTHON=python3.11 make ...)"

# pip, quiet but for its errors; its own exit status decides (not the filter's).
pip() {
  local log
  log=$(mktemp)
  if "$py" -m pip --disable-pip-version-check -q "$@" >"$log" 2>&1; then
    grep -v -E "is ignored: it is neither|^$" "$log" >&2 || true
    rm -f "$log"
  else
    grep -v -E "is ignored: it is neither|^$" "$log" >&2 || true
    rm -f "$log"
    fail "pip $* failed (see above; no network or no matching version?)"
  fi
}

if [[ ",$extras," == *",train,"* ]] && ! "$py" -c "import torch" 2>/dev/null; then
  tmp=$(mktemp -d)
  if "$py" -m pip download -q --no-deps --no-index -d "$tmp" "torch==$torch_version" >/dev/null 2>&1; then
    echo "setup: installing torch $torch_version (CPU build, local wheel)" >&2
    pip install "$tmp"/torch-*.whl
  else
    echo "setup: installing torch $torch_version (CPU build, download.pytorch.org)" >&2
    pip install "torch==$torch_version+cpu" --index-url https://download.pytorch.org/whl/cpu \
      --extra-index-url https://pypi.org/simple
  fi
  rm -rf "$tmp"
  "$py" -c "import torch" || fail "torch failed to install"
fi

spec="."
[ -n "$extras" ] && spec=".[${extras}]"
echo "setup: installing fusion-rt${extras:+[$extras]} (editable)" >&2
pip install -e "$spec"
# -I: not from the source tree in the current folder, only what is installed in the venv
"$py" -I -c "import fusion_rt" || fail "fusion_rt failed to install into $venv"
