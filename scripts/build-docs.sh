#!/usr/bin/env bash
# Builds the documentation site with MkDocs in strict mode: any warning (a broken link, an
# unresolved API reference, a docstring the renderer cannot read) fails the build.
#
#   bash scripts/build-docs.sh [output-folder]      (default: site/)
#
# Uses the project's .venv; the doc tools are the `docs` extra of pyproject.toml. After the
# build, scripts/check_site_links.py checks every internal link and anchor of the site.
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
"$BIN/python" scripts/check_site_links.py "$OUT"
echo "build-docs: built $OUT/ with no warnings and no broken links" >&2
echo "build-docs: to read it, serve it (links and search need a server, not file://):" >&2
echo "  .venv/bin/python -m http.server -d $OUT 8000   # then open http://127.0.0.1:8000/" >&2
