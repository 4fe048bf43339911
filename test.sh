#!/usr/bin/env bash
# Sets up and runs everything CI runs: lint, types, and the whole test suite against the
# real tools. Extra arguments go to pytest (e.g. ./test.sh -m "not slow" tests/crypto).
source "$(dirname "$0")/scripts/setup.sh"
ensure_debian_packages "${RUN_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
ensure_venv "[test]"
cd "$ROOT"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy" --strict crypto
"$VENV/bin/mypy" relay onion clients tests bench
exec "$VENV/bin/pytest" "$@"
