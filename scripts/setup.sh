# Sourced by ./run.sh and ./test.sh: brings a fresh Debian machine to the point where
# Amanah runs. Idempotent and quick the second time: it installs only what is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

# Debian packages the relay itself needs at run time.
# (No ffmpeg: the sanitizer's FFmpeg is the one PyAV's wheel bundles.)
RUN_PACKAGES=(python3 python3-venv libmagic1 tor bubblewrap)
# Added for the test suite: the real tools that judge our output, and their test data.
# ffmpeg: Debian's, which makes the test inputs and judges the results (ffprobe, decoding).
# chromium: the browser tests (tests/browser) drive /usr/bin/chromium through Playwright.
# ca-certificates: the sanitizer tests fetch other projects' test files from Debian's pool
# over https (tests/sanitize/conftest.py), which Python checks against the system's roots.
# flac: libFLAC's own encoder makes FLAC inputs, and its decoder tests the results
# (tests/sanitize/test_flac.py).
TEST_PACKAGES=(age golang-filippo-age-dev libimage-exiftool-perl chromium ca-certificates flac
    ffmpeg)

say() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "error: need root (or sudo) to install: ${*: -1}"
        exit 1
    fi
}

ensure_debian_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
    local extra="$1" stamp="$VENV/.installed-$1"
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        python3 -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        say "installing the project into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e "$ROOT$extra"
        touch "$stamp"
    fi
}
