#!/usr/bin/env bash
# mypy on the package as installed: the editable install is a tree of links under build/
# (setuptools' strict mode, see the Makefile), which mypy reads as source through MYPYPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(ls -d build/__editable__.certwright-* 2>/dev/null | head -n 1 || true)
if [ -z "$tree" ]; then
  echo "typecheck: no editable install under build/; run 'make test' (or 'make lint') first" >&2
  exit 2
fi
MYPYPATH="$tree" exec "${PYTHON:-.venv/bin/python}" -m mypy "$@"
