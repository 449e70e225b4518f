// The WebAssembly kernel module. Every export here is a kernel called from
// src/backend/wasm/ (or src/quant/); names are snake_case versions of the Backend method names
// (STYLE.md §2). Memory is imported (env.memory) and owned by the TS side: kernels never allocate.
export * from './quant';

/** First byte the TS allocator may use (everything below is this module's static data). */
export function heap_base(): usize {
  return __heap_base;
}
