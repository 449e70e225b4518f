// Node entry point: the isomorphic API plus file-system sources. Importing it turns on relaxed
// SIMD in Node 20 (behind a V8 flag there), before any kernel module is compiled.
import { enableRelaxedSimd } from './backend/wasm/node-flags.ts';
enableRelaxedSimd();
export * from './index.ts';
export { FileSource, NodeDirSource, NodeOutDir } from './io/node.ts';
export { openModelPath } from './io/node-model.ts';
export { dawnGpu } from './backend/webgpu/dawn.ts';
