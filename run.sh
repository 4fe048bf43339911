#!/usr/bin/env bash
# Sets up and runs the relay on its embedded defaults: SQLite and keys in ./amanah-data
# (or $AMANAH_DATA), initialised on first run. Extra arguments go to `amanah serve`.
source "$(dirname "$0")/scripts/setup.sh"
ensure_debian_packages "${RUN_PACKAGES[@]}"
ensure_venv ""
export AMANAH_DATA="${AMANAH_DATA:-$ROOT/amanah-data}"
[ -f "$AMANAH_DATA/amanah.toml" ] || "$VENV/bin/amanah" init
# The relay starts its own tor (data in $AMANAH_DATA/tor) and publishes its two onion
# services; `amanah status` shows their addresses. Without a network, tor keeps the
# services registered and their publication pending (the log says so). `--no-tor`: loopback.
exec "$VENV/bin/amanah" serve "$@"
