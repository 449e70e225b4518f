#!/usr/bin/env bash
# Installs what webqlora's tests need on a Debian 12 machine and then the npm packages.
#   - Mesa lavapipe (a CPU Vulkan driver) from bookworm-backports: Dawn (npm `webgpu`) refuses
#     bookworm's own Mesa 22, Mesa 25 works. This lets the WebGPU tests run with no GPU.
#   - Debian's chromium (with SwiftShader) for the browser test, driven by puppeteer-core.
#   - llama.cpp (npm node-llama-cpp, test-only) into .llamacpp/ for test/llamacpp/; also without root.
# System packages need root; without root (or apt) this step is skipped with a message and the
# WebGPU/browser tests will say what is missing. Idempotent: a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

have_lavapipe() { dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -q bpo; }
have_chromium() { command -v chromium >/dev/null 2>&1; }

if have_lavapipe && have_chromium; then
  echo "setup: lavapipe and chromium already installed"
elif [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: not root on a Debian system; install mesa-vulkan-drivers (Mesa >= 25) and chromium yourself for the WebGPU and browser tests" >&2
else
  . /etc/os-release
  codename=${VERSION_CODENAME:-bookworm}
  export DEBIAN_FRONTEND=noninteractive
  if ! have_lavapipe; then
    list=/etc/apt/sources.list.d/${codename}-backports.sources
    if [ ! -f "$list" ]; then
      mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
      [ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
      [ -n "$mirror" ] || { echo "setup: no Debian mirror found in apt's sources" >&2; exit 1; }
      printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" "$codename" > "$list"
    fi
  fi
  apt-get update -qq
  if ! have_lavapipe; then apt-get install -y -qq -t "${codename}-backports" mesa-vulkan-drivers libvulkan1 >/dev/null; fi
  if ! have_chromium; then apt-get install -y -qq chromium >/dev/null; fi
  echo "setup: lavapipe $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers), $(chromium --version 2>/dev/null || echo 'no chromium')"
fi

if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi

# llama.cpp itself, the reference client of test/llamacpp/, through npm node-llama-cpp (pinned in
# .llamacpp/package.json and its lockfile): ~730 MB with the CUDA/Vulkan builds npm pulls in, so
# it lives in its own folder and is never part of the root `npm ci`. --ignore-scripts: its
# postinstall would try to download or build llama.cpp; the tests use the prebuilt CPU binary.
pinned=$(node -p "require('./.llamacpp/package.json').dependencies['node-llama-cpp']")
installed=$(node -p "try { require('./.llamacpp/node_modules/node-llama-cpp/package.json').version } catch { '' }")
if [ "$installed" = "$pinned" ]; then
  echo "setup: node-llama-cpp $pinned already installed in .llamacpp/"
else
  (cd .llamacpp && npm ci --no-audit --no-fund --ignore-scripts)
fi
