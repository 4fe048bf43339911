#!/usr/bin/env bash
# Sets up and runs the relay on its embedded defaults: SQLite and keys in ./amanah-data
# (or $AMANAH_DATA), initialised on first run. Extra arguments go to `amanah serve`.
source "$(dirname "$0")/scripts/setup.sh"
ensure_debian_packages "${RUN_PACKAGES[@]}"
ensure_venv ""
export AMANAH_DATA="${AMANAH_DATA:-$ROOT/amanah-data}"
[ -f "$AMANAH_DATA/amanah.toml" ] || "$VENV/bin/amanah" init
# Loopback only until the onion services land (issue 6): then tor starts here too.
exec "$VENV/bin/amanah" serve --no-tor "$@"
