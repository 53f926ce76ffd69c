#!/usr/bin/env bash
# Test set-up for the report's browser test: Debian's chromium at /usr/bin/chromium.
# Best effort: where it cannot be installed (not root, no apt), the browser test is skipped and says why.
set -u
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: not root or no apt-get; the headless-browser test will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "install-chromium: apt-get could not install chromium; the headless-browser test will be skipped" >&2
exit 0
