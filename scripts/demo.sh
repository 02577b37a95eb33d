#!/usr/bin/env bash
# The README's main command: sets up ./.venv, then runs the whole prompt-tuning workflow offline
# (tune SmolLM2 with PEFT on the CPU, learning curve, deploy, tuned vs base comparison).
# Arguments go to examples/local_workflow.py: [output-folder] [--min-gain POINTS].
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh
exec .venv/bin/python examples/local_workflow.py "$@"
