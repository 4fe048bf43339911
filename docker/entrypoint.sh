#!/bin/sh
# Initialises the data directory on first start, then runs `amanah ARGS` (default: serve).
set -eu
[ -f "$AMANAH_DATA/amanah.toml" ] || amanah init
exec amanah "$@"
