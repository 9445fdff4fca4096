#!/bin/sh
# Install Debian's headless-capable Chromium if it is missing (used by the report's browser test).
# Idempotent and quiet when Chromium is already there. Needs root (or passwordless sudo) to install.
set -eu

for candidate in chromium chromium-browser; do
    if command -v "$candidate" >/dev/null 2>&1; then
        exit 0
    fi
done

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
else
    echo "ensure-chromium: chromium is missing and this is not root; install it with:" >&2
    echo "    apt-get install -y chromium" >&2
    exit 1
fi

echo "ensure-chromium: installing Debian's chromium package (headless browser for the report test)" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# apt's chatter goes to a log that is shown only when something fails.
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "ensure-chromium: apt-get failed (see above); install it by hand: apt-get install -y chromium" >&2
    exit 1
fi
command -v chromium >/dev/null 2>&1 || {
    echo "ensure-chromium: apt-get finished but no 'chromium' command was found" >&2
    exit 1
}
