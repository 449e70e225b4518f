// Node entry point: the isomorphic API plus file-system sources.
export * from './index.ts';
export { FileSource, NodeDirSource, NodeOutDir } from './io/node.ts';
export { openModelPath } from './io/node.ts';
export { dawnGpu } from './backend/webgpu/dawn.ts';
