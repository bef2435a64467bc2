#!/usr/bin/env bash
# Set up everything Hepatica needs on a Debian machine (bookworm): system packages, then a
# virtual environment at .venv with the package and its extras. Idempotent: re-running is
# cheap. The Dockerfiles call this same script, so images and bare machines match.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for tool in /usr/bin/storescp:dcmtk /usr/bin/dciodvfy:dicom3tools /usr/bin/chromium:chromium; do
  [ -x "${tool%%:*}" ] || need_apt+=("${tool##*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first and pinned: the CPU build; a looser request would pull GBs of CUDA wheels
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[train,evaluate,dev]"
echo "hepatica installed: $(.venv/bin/hepatica --version)"
