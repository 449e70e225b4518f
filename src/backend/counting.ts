// A Backend that only counts: buffers have a size but no storage and kernels do nothing. The
// memory estimate (src/model/memory.ts) builds the real Workspace / LoraAdapters / optimizer
// objects on it, so the estimate cannot drift from what training actually allocates.
import type { Backend, BufferType, MemoryStats, QuantUpload, QuantWeight, Tensor } from './backend.ts';
import { BUFFER_BYTES } from './validate.ts';
import { wasmQuantLayout } from './wasm/layout.ts';

export class CountingBackend implements Backend {
  readonly name = 'reference' as const;
  liveBytes = 0;
  peakBytes = 0;
  private readonly sizes = new Map<object, number>();

  constructor(
    /** bytes each allocation is rounded up to (the WASM allocator aligns to 64) */
    private readonly align = 64,
  ) {}

  private count(key: object, bytes: number): void {
    const b = Math.ceil(Math.max(bytes, 1) / this.align) * this.align;
    this.sizes.set(key, b);
    this.liveBytes += b;
    this.peakBytes = Math.max(this.peakBytes, this.liveBytes);
  }
  private drop(key: object): void {
    this.liveBytes -= this.sizes.get(key) ?? 0;
    this.sizes.delete(key);
  }

  alloc(type: BufferType, length: number, label: string): Tensor {
    const t = { type, length, label };
    this.count(t, length * BUFFER_BYTES[type]);
    return t;
  }
  free(t: Tensor): void { this.drop(t); }
  uploadQuant(w: QuantUpload): QuantWeight {
    const q = { N: w.N, K: w.K, blocksize: w.blocksize, quantType: w.quantType, doubleQuant: w.dq !== null, label: w.label };
    // exactly the one allocation the wasm backend makes for this weight
    this.count(q, wasmQuantLayout(w.N, w.K, w.blocksize, w.dq ? w.dq.nestedBlocksize : null).total);
    return q;
  }
  freeQuant(w: QuantWeight): void { this.drop(w); }
  writeQuant(): void {}
  write(): void {}
  async read(t: Tensor): Promise<Float32Array> { return new Float32Array(t.length); }
  copy(): void {}
  fill(): void {}
  async flush(): Promise<void> {}
  memory(): MemoryStats { return { liveBytes: this.liveBytes, peakBytes: this.peakBytes }; }
  async destroy(): Promise<void> {}
  embedding(): void {}
  rmsNorm(): void {}
  matmul(): void {}
  qMatmul(): void {}
  rope(): void {}
  attention(): void {}
  swiglu(): void {}
  geglu(): void {}
  softcap(): void {}
  add(): void {}
  dropout(): void {}
  addUniformNoise(): void {}
  crossEntropy(): void {}
  scaleColumns(): void {}
  columnDot(): void {}
  doraScale(): void {}
  rowSumSquares(): void {}
  qRowSumSquares(): void {}
  qMatmulBackwardInput(): void {}
  rmsNormBackward(): void {}
  ropeBackward(): void {}
  attentionBackward(): void {}
  swigluBackward(): void {}
  gegluBackward(): void {}
  sumSquares(): void {}
  adamwStep(): void {}
  sgdStep(): void {}
}
