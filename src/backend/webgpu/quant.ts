// A 4-bit weight on the GPU: one buffer of u32 words holding bitsandbytes' parts, 16-byte aligned
// (quant map, nested map, nested absmax, absmax or dq codes, packed codes), and the Params fields
// (q_*) of wgsl/gemm.wgsl and wgsl/dora.wgsl that tell wgsl/q4.wgsl where each part is.
import type { QuantUpload } from '../backend.ts';
import { quantBytes } from '../../quant/types.ts';
import { QuantSlot, checkQuantUpload } from '../validate.ts';
import { roundUp, type Buf, type GpuRuntime } from './runtime.ts';

/** Word offsets of the parts of a 4-bit weight inside its buffer (Params q_* of wgsl/gemm.wgsl). */
export interface QuantParts {
  map: number;
  nmap: number;
  nabsmax: number;
  absmax: number;
  codes: number;
  packed: number;
  words: number;
}

export class GpuQuant extends QuantSlot {
  /** bytes of the upload's parts (memory()) */
  readonly bytes: number;
  /** the double-quant offset (a kernel parameter, not stored in the buffer) */
  offset: number;
  constructor(w: QuantUpload, public buf: Buf | null, public parts: QuantParts) {
    super(w);
    this.bytes = quantBytes(w);
    this.offset = w.dq ? Math.fround(w.dq.offset) : 0;
  }
}

/** validate.ts's checks, plus the kernels' u32 element index (wgsl/q4.wgsl deq). */
export function checkGpuQuant(w: QuantUpload): void {
  checkQuantUpload(w);
  if (w.N * w.K >= 2 ** 32) throw new Error(`uploadQuant ${w.label}: [${w.N}, ${w.K}] has 2³² elements or more`);
}

/** Where each part of w goes in its buffer. */
export function quantParts(w: QuantUpload): QuantParts {
  const nb = Math.ceil((w.N * w.K) / w.blocksize), dq = w.dq;
  const sizes = [16, dq ? 256 : 0, dq ? dq.nestedAbsmax.length : 0, dq ? Math.ceil(nb / 4) : nb, Math.ceil(w.packed.length / 4)];
  const offs: number[] = [];
  let words = 0;
  for (const s of sizes) {
    offs.push(words);
    words += roundUp(s, 4); // 16-byte aligned parts
  }
  return { map: offs[0]!, nmap: offs[1]!, nabsmax: offs[2]!, absmax: dq ? 0 : offs[3]!, codes: dq ? offs[3]! : 0, packed: offs[4]!, words };
}

/** The bytes of a part, padded to whole words. */
function bytesOf(a: Float32Array | Uint8Array): Uint8Array {
  const u = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (u.length % 4 === 0) return u;
  const p = new Uint8Array(roundUp(u.length, 4));
  p.set(u);
  return p;
}

/** Writes w's parts into buffer b at `parts` (enqueued, as Backend.write). */
export function writeQuantParts(rt: GpuRuntime, b: Buf, parts: QuantParts, w: QuantUpload): void {
  rt.writeBuffer(b, parts.map * 4, bytesOf(w.quantMap.subarray(0, 16)));
  if (w.dq) {
    rt.writeBuffer(b, parts.nmap * 4, bytesOf(w.dq.nestedQuantMap));
    rt.writeBuffer(b, parts.nabsmax * 4, bytesOf(w.dq.nestedAbsmax));
    rt.writeBuffer(b, parts.codes * 4, bytesOf(w.dq.codes));
  } else {
    rt.writeBuffer(b, parts.absmax * 4, bytesOf(w.absmax!));
  }
  rt.writeBuffer(b, parts.packed * 4, bytesOf(w.packed));
}

/** Params of wgsl/gemm.wgsl describing a 4-bit weight (B of the tile loop: its rows are K long). */
export function quantParams(q: GpuQuant) {
  return {
    ldb: q.K, b_off: 0, q_packed: q.parts.packed, q_map: q.parts.map, q_absmax: q.parts.absmax, q_codes: q.parts.codes,
    q_nabsmax: q.parts.nabsmax, q_nmap: q.parts.nmap, q_bs: q.blocksize, q_nbs: q.doubleQuant ? q.nestedBlocksize : 1,
    q_dq: q.doubleQuant ? 1 : 0, q_offset: q.offset, one: 1,
  };
}
