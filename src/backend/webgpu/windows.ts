// Windows of tensors larger than one storage binding: a call over such a tensor becomes several
// dispatches (index.ts's header lists how each kernel splits), each binding an aligned window of
// the buffer (GpuRuntime.view) and told, in its params, the element offset of its first element
// inside that window. These helpers cut the calls of index.ts.
import type { Buf, GpuRuntime, View } from './runtime.ts';

export interface Windows {
  /** The binding for elements [first, first + n) of a buffer of element size eb, and the element offset of `first` inside it. */
  win(b: Buf, eb: number, first: number, n: number, what: string): { v: View; off: number };
  /** The binding of a whole buffer (or of its first `bytes`). */
  whole(b: Buf, what: string, bytes?: number): View;
  /** [i0, i1) ranges of an elementwise call over f32 operands: one range unless some operand is larger than a binding. */
  ranges(n: number, bufs: Buf[]): Array<[number, number]>;
  /**
   * [r0, r1) row blocks of a row-wise call whose largest row is rowBytes: one block unless some
   * operand is larger than a binding; a single row larger than a binding is refused.
   */
  rowBlocks(R: number, rowBytes: number, bufs: Buf[], what: string): Array<[number, number]>;
}

export function windows(rt: GpuRuntime): Windows {
  const fits = (bufs: Buf[]) => bufs.every((b) => b.size <= rt.maxBinding);
  /** [0, n) in blocks of `per` */
  const blocks = (n: number, per: number): Array<[number, number]> => {
    const out: Array<[number, number]> = [];
    for (let i0 = 0; i0 < n; i0 += per) out.push([i0, Math.min(n, i0 + per)]);
    return out;
  };
  return {
    win(b, eb, first, n, what) {
      const v = rt.view(b, first * eb, n * eb, what);
      return { v, off: v.shift / eb };
    },
    whole: (b, what, bytes = b.size) => rt.view(b, 0, bytes, what),
    ranges: (n, bufs) => (fits(bufs) ? [[0, n]] : blocks(n, Math.floor(rt.windowBytes / 4))),
    rowBlocks(R, rowBytes, bufs, what) {
      if (fits(bufs)) return [[0, R]];
      const per = Math.floor(rt.windowBytes / rowBytes);
      if (per < 1) throw new Error(`${what}: one row (${rowBytes} bytes) is larger than a storage binding`);
      return blocks(R, per);
    },
  };
}
