#!/usr/bin/env bash
# The README's main command: sets up ./.venv, then runs the end-to-end workflow.
# (Until the local backend lands, the workflow runs against the bundled fake watsonx.ai.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh
exec .venv/bin/python examples/watsonx_workflow_on_fake.py "$@"
