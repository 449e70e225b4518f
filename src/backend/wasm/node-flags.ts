// Node 20's V8 has relaxed SIMD (fused multiply-add, the faster kernel build) behind
// --experimental-wasm-relaxed-simd; Node ≥ 22 has it on. The Node entry points (src/node.ts and
// the CLI) turn it on for the process before any module is compiled, so Node runs the same relaxed
// build Chromium does. Node-only (node:v8); browsers decide with WebAssembly.validate alone.
import { setFlagsFromString } from 'node:v8';
import { RELAXED_PROBE } from './module.ts';

/** Enables relaxed SIMD for this process if the engine has it behind a flag; true if it is on now. */
export function enableRelaxedSimd(): boolean {
  if (WebAssembly.validate(RELAXED_PROBE)) return true;
  setFlagsFromString('--experimental-wasm-relaxed-simd');
  return WebAssembly.validate(RELAXED_PROBE);
}
