#!/usr/bin/env bash
# Builds the documentation site with MkDocs in strict mode: any warning (a broken link, an
# unresolved API reference, a docstring the renderer cannot read) fails the build.
#
#   bash scripts/build-docs.sh [output-folder]      (default: site/)
#
# Uses the project's .venv; the doc tools are the `docs` extra of pyproject.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=.venv/bin
OUT="${1:-site}"

if ! "$BIN/python" -c "import mkdocs, material, mkdocstrings, mkdocstrings_handlers.python" 2>/dev/null; then
    echo "build-docs: installing the docs extra into .venv" >&2
    "$BIN/python" -m pip --disable-pip-version-check -q install -e ".[docs]"
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# NO_MKDOCS_2_WARNING: Material prints a notice about MkDocs 2.0 that is not about these docs.
status=0
NO_MKDOCS_2_WARNING=1 "$BIN/mkdocs" build --strict --clean --site-dir "$OUT" 2>&1 | tee "$log" || status=$?
# Strict mode turns warnings into a failure; a WARNING line that got through fails it here too.
if grep -E "^(WARNING|ERROR)" "$log" >/dev/null; then
    echo "build-docs: the build printed warnings (above); fix them" >&2
    exit 1
fi
if [[ $status -ne 0 ]]; then
    echo "build-docs: mkdocs failed (exit $status)" >&2
    exit "$status"
fi
echo "build-docs: built $OUT/ with no warnings" >&2
