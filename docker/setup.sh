#!/usr/bin/env bash
# Set up everything Hepatica needs on a Debian machine (bookworm): system packages, then a
# virtual environment at .venv with the package and its extras. Idempotent: re-running is
# cheap. The Dockerfiles call this same script, so images and bare machines match.
set -euo pipefail
cd "$(dirname "$0")/.."

# HEPATICA_SYSTEM_TOOLS: "path:package" pairs; images override it to install less.
tools=${HEPATICA_SYSTEM_TOOLS-/usr/bin/storescp:dcmtk /usr/bin/openssl:openssl /usr/bin/dciodvfy:dicom3tools /usr/bin/chromium:chromium /usr/sbin/Orthanc:orthanc /usr/share/orthanc/plugins/libOrthancPython.so:orthanc-python /usr/share/orthanc/plugins/libOrthancDicomWeb.so:orthanc-dicomweb /usr/lib/python3/dist-packages/yaml/__init__.py:python3-yaml /usr/bin/java:default-jre-headless /usr/share/java/pixelmed.jar:libpixelmed-java /usr/bin/ojph_compress:openjph-tools /usr/bin/redis-server:redis-server /usr/bin/curl:curl}
need_apt=()
for tool in $tools; do
  [ -e "${tool%%:*}" ] || need_apt+=("${tool##*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# HEPATICA_EXTRAS: pip extras; images set it empty (serving needs no torch).
extras=${HEPATICA_EXTRAS-train,evaluate,scale,dev}
.venv/bin/pip install -q --upgrade pip
# torch first and pinned: the CPU build; a looser request would pull GBs of CUDA wheels
case ",$extras," in *,train,*) .venv/bin/pip install -q "torch==2.13.0" ;; esac
# pyradiomics (a core dependency: serving extracts features) is an sdist that builds only
# against an installed numpy and versioneer, without pip's build isolation
.venv/bin/pip install -q numpy versioneer
.venv/bin/pip install -q --no-build-isolation "pyradiomics>=3.0.1"
.venv/bin/pip install -q -e ".${extras:+[$extras]}"
echo "hepatica installed: $(.venv/bin/hepatica --version)"
# the viewer test's OHIF build and playwright-core (cached in gitignored folders; dev only)
case ",$extras," in *,dev,*) bash tests/viewer/setup.sh || echo "WARNING: viewer test tools not installed: tests/viewer will skip" >&2 ;; esac
