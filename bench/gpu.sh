#!/usr/bin/env bash
# bench/gpu.sh: WebGPU training tokens/s and achieved GFLOP/s on this machine's GPU (the adapter
# named), for stories110M and tinyllama-1.1b shapes at batch 1 × seq 256. One command, no network,
# nothing installed beyond `npm ci` (run offline from npm's cache, and only when node_modules is
# missing or older than package-lock.json); meant to finish in under 5 minutes on a GPU machine.
#   bash bench/gpu.sh [--steps 4] [--seq 256] [--models stories110M,tinyllama-1.1b] [--timeout-s 200] [--require-gpu]
# Exit 2: no WebGPU adapter (nothing measured). A CPU emulation (Mesa lavapipe) is measured and
# labelled CPU EMULATION; --require-gpu makes it exit 3 instead. Details: bench/gpu.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
command -v node >/dev/null || { echo "bench/gpu.sh: node is not installed (Node >= 20 needed)" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || { echo "bench/gpu.sh: Node $(node -v) is too old (>= 20 needed)" >&2; exit 1; }
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "bench/gpu.sh: npm ci --offline (from npm's cache: this machine needs no network)" >&2
  npm ci --offline --no-audit --no-fund >&2 || {
    echo "bench/gpu.sh: npm ci --offline failed: npm's cache lacks a package. Copy node_modules/ from a machine with the same platform, or run npm ci once with network." >&2; exit 1; }
fi
# the generated kernels and WGSL tables; serialized with any other build of this checkout
if command -v flock >/dev/null; then flock /tmp/webqlora-build.lock node scripts/build.mjs --no-dist >&2
else node scripts/build.mjs --no-dist >&2; fi
node --import tsx bench/gpu.ts "$@"
echo "bench/gpu.sh: $((SECONDS - t0)) s in all" >&2
