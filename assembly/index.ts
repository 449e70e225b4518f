// The WebAssembly kernel module. Every export here is a kernel called from
// src/backend/wasm/ (or src/quant/); names are snake_case versions of the Backend method names
// (STYLE.md §2). Memory is imported (env.memory) and owned by the TS side: kernels never allocate.
export * from './quant';

/** First byte the TS allocator may use (everything below is this module's static data). */
export function heap_base(): usize {
  return __heap_base;
}

/** Plain copy of n bytes with v128 loads/stores: the bandwidth baseline for bench/quant. */
export function copy_bytes(src: usize, dst: usize, n: i32): void {
  let i: i32 = 0;
  for (; i + 64 <= n; i += 64) {
    v128.store(dst + <usize>i, v128.load(src + <usize>i));
    v128.store(dst + <usize>i, v128.load(src + <usize>i, 16), 16);
    v128.store(dst + <usize>i, v128.load(src + <usize>i, 32), 32);
    v128.store(dst + <usize>i, v128.load(src + <usize>i, 48), 48);
  }
  for (; i < n; i++) store<u8>(dst + <usize>i, load<u8>(src + <usize>i));
}
