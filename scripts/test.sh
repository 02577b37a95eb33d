#!/usr/bin/env bash
# The README's test command: sets up ./.venv, then lint, type-check and every test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh
BIN=.venv/bin

echo "== ruff" >&2
"$BIN/ruff" check .
"$BIN/ruff" format --check .
echo "== mypy --strict" >&2
"$BIN/mypy"
echo "== docs (mkdocs --strict)" >&2
docs_dir="$(mktemp -d)"
bash scripts/build-docs.sh "$docs_dir/site"
rm -rf "$docs_dir"
echo "== wheel builds" >&2
wheel_dir="$(mktemp -d)"
"$BIN/python" -m pip wheel -q --no-deps --no-build-isolation -w "$wheel_dir" . >/dev/null
ls "$wheel_dir"/granite_tuner-*.whl >&2
rm -rf "$wheel_dir"
echo "== pytest" >&2
set +e
"$BIN/python" -m pytest "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
    echo "test.sh: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit $status
