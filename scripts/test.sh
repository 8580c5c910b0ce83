#!/usr/bin/env bash
# Set up (scripts/setup.sh), check lint (ruff) and types (mypy), then run the test suite. Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Debian packages the tests use, where missing: PostgreSQL (the registry tests run an mlflow
# server on it too), Chromium (the HTML reports are rendered in it, headless) and a Java runtime
# (PySpark's local mode, for the spark_udf tests).
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    "${sudo[@]}" apt-get update -q && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}"
fi
echo "== lint (ruff) and types (mypy)"
.venv/bin/ruff check packager tests benchmarks scripts docs
.venv/bin/mypy
# The docs site: a broken link or anchor fails the build (mkdocs.yml: strict, validation); the
# reference pages are written from the code at build time (docs/hooks/reference.py).
echo "== docs (mkdocs build --strict)"
site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$site"  # not --quiet: it hides the warnings strict counts
rm -rf "$site"
# Two workers (PYTEST_WORKERS=0 runs in one process): a file's tests run in one worker, and the
# tiny chains' builds and the torch-free venvs are made once and shared (tests/conftest.py).
exec .venv/bin/python -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
