#!/usr/bin/env bash
# Install what tests/browser needs: Debian's chromium (Playwright drives it at /usr/bin/chromium;
# no browser is ever downloaded by Playwright) and the Python packages playwright + jupyterlab.
# Run as root (CI containers) or with sudo; pass the Python to install into (default: python).
set -euo pipefail

PYTHON="${1:-python}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
"$PYTHON" -m pip install --quiet playwright jupyterlab ipykernel nbclient nbformat

test -x /usr/bin/chromium || { echo "chromium was not installed at /usr/bin/chromium" >&2; exit 1; }
"$PYTHON" -c "import playwright.sync_api, jupyterlab" && echo "browser test dependencies ready"
