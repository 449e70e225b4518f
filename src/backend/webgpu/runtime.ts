// The machinery under the WebGPU kernels (index.ts): buffers, the pipeline and bind-group caches,
// the params ring, one command encoder per submit, readback through reused staging buffers.
//
// Execution model (backend.ts): a kernel call records a dispatch into the open compute pass and
// returns; nothing reaches the queue until a read, a flush, a write that must be ordered after
// the recorded work, or a full params ring. Per dispatch the host does no allocation on the GPU
// and only cache look-ups otherwise (every check runs when a cache entry is created):
//  - pipelines: one per (module, entry point, override constants), created on first use;
//  - bind groups: @group(0) is the params ring (one bind group, dynamic offset); @group(1) holds
//    the storage bindings and is cached by the exact (buffer, offset, size) of every binding —
//    tensors are allocated at setup and reused every step, so a steady loop creates none; a
//    destroyed buffer takes its bind groups (and every reference to them) with it;
//  - params: each dispatch's `Params` struct goes to the next slot of a host mirror of one
//    uniform buffer, uploaded with a single writeBuffer just before the submit (the used slots
//    are zeroed then, so a dispatch writes only the fields it names).
// Readback goes through staging buffers kept for reuse up to STAGING_KEEP_BYTES each.
// Storage bindings are limited to maxStorageBufferBindingSize (128 MiB on some adapters): `view`
// binds a window of a larger buffer, and the kernels that can see such tensors take offsets.
import { WGSL } from '../../generated/wgsl.ts';
import { WebqloraError } from '../../errors.ts';
import { reflectWgsl, type ModuleInfo, type ParamField } from './reflect.ts';

// WebGPU flag values from the spec (the GPUBufferUsage / GPUMapMode globals are absent in Node
// unless Dawn's globals were installed).
const BUF_MAP_READ = 0x1;
const BUF_COPY_SRC = 0x4;
const BUF_COPY_DST = 0x8;
const BUF_UNIFORM = 0x40;
const BUF_STORAGE = 0x80;
const MAP_READ = 0x1;
const STAGE_COMPUTE = 0x4;

/** Counters for tests (test/webgpu/caching.test.ts) and benchmarks. */
export interface RuntimeStats {
  pipelines: number;
  bindGroups: number;
  buffers: number;
  submits: number;
  dispatches: number;
}

/** A device buffer with a stable identity for the bind-group cache. */
export interface Buf {
  readonly id: number;
  readonly buffer: GPUBuffer;
  /** bytes (a multiple of 16) */
  readonly size: number;
}

/** A storage binding: bytes [offset, offset + size) of buf; `shift` is where the caller's range
 *  starts inside it (in bytes). */
export interface View {
  buf: Buf;
  offset: number;
  size: number;
  shift: number;
}

interface Module {
  info: ModuleInfo;
  shader: GPUShaderModule;
  bgl: GPUBindGroupLayout;
  layout: GPUPipelineLayout;
  /** binding index → position in info.bindings */
  order: number[];
  /** Params fields by name */
  fields: Map<string, ParamField>;
}

interface CachedGroup {
  group: GPUBindGroup;
  /** ids of the buffers it binds (each once) */
  ids: number[];
}

/** Sizes of the runtime's caches, for tests (test/webgpu/caching.test.ts). */
export interface RuntimeBookkeeping {
  /** cached @group(1) bind groups */
  bindGroups: number;
  /** buffer → bind-group references (one per buffer of each cached group) */
  bufferRefs: number;
  /** readback staging buffers kept for reuse, and their bytes */
  staging: number;
  stagingBytes: number;
}

export const roundUp = (x: number, m: number): number => Math.ceil(x / m) * m;

const RING_SLOTS = 4096;
/** Readback staging buffers larger than this are destroyed after use instead of kept. */
export const STAGING_KEEP_BYTES = 64 * 2 ** 20;

export class GpuRuntime {
  readonly stats: RuntimeStats = { pipelines: 0, bindGroups: 0, buffers: 0, submits: 0, dispatches: 0 };
  /** largest storage binding in bytes (the adapter's, or a smaller test limit) */
  readonly maxBinding: number;
  /** storage binding offsets must be multiples of this */
  readonly align: number;
  readonly maxWorkgroupStorage: number;
  /** invocations per workgroup of the 1-D kernels (GRID_WG of wgsl/grid.wgsl) */
  private readonly gridWg: number;

  private readonly infos = new Map<string, ModuleInfo>();
  private readonly modules = new Map<string, Module>();
  /** by `module:entry:` + the constants in the caller's order (no sort per dispatch) … */
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  /** … and by the constants sorted by name: one pipeline per distinct specialization */
  private readonly pipelinesSorted = new Map<string, GPUComputePipeline>();
  private readonly bindGroups = new Map<string, CachedGroup>();
  /** buffer id → keys of the cached bind groups that bind it */
  private readonly bgByBuf = new Map<number, Set<string>>();
  private readonly ringLayout: GPUBindGroupLayout;
  private readonly ring: GPUBuffer;
  private readonly ringGroup: GPUBindGroup;
  private readonly slotBytes: number;
  private readonly mirror: ArrayBuffer;
  private readonly mirrorView: DataView;
  private readonly mirrorBytes: Uint8Array;
  private slot = 0;
  private enc: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private readonly dummies: Buf[] = [];
  private readonly staging: GPUBuffer[] = [];
  private readonly scratch = new Map<string, Buf>();
  private nextId = 1;
  private lostInfo: { reason: string; message: string } | null = null;
  private firstError: { message: string; oom: boolean } | null = null;
  private destroyed = false;

  constructor(readonly device: GPUDevice, opts: { maxBindingBytes?: number } = {}) {
    const lim = device.limits;
    this.maxBinding = Math.min(lim.maxStorageBufferBindingSize, opts.maxBindingBytes ?? Infinity);
    this.align = lim.minStorageBufferOffsetAlignment;
    this.maxWorkgroupStorage = lim.maxComputeWorkgroupStorageSize;
    if (this.maxBinding < 2 * this.align + 64) throw new Error(`webgpu: a binding limit of ${this.maxBinding} bytes is too small`);
    for (const [name, src] of Object.entries(WGSL)) {
      const info = reflectWgsl(name, src);
      if (info.bindings.length > lim.maxStorageBuffersPerShaderStage) {
        throw new WebqloraError(`webgpu: this GPU allows ${lim.maxStorageBuffersPerShaderStage} storage buffers per shader, wgsl/${name}.wgsl needs ${info.bindings.length}; use --backend wasm.`);
      }
      this.infos.set(name, info);
    }
    let gridWg = 0;
    for (const [name, info] of this.infos) {
      const g = info.consts.get('GRID_WG');
      if (g === undefined) continue;
      if (gridWg && g !== gridWg) throw new Error(`webgpu: wgsl/${name}.wgsl has GRID_WG ${g}, another module ${gridWg}`);
      gridWg = g;
    }
    if (!gridWg) throw new Error('webgpu: no module includes wgsl/grid.wgsl (GRID_WG)');
    this.gridWg = gridWg;
    let paramBytes = 16;
    for (const i of this.infos.values()) paramBytes = Math.max(paramBytes, i.params.length * 4);
    this.slotBytes = roundUp(paramBytes, Math.max(16, lim.minUniformBufferOffsetAlignment));
    this.mirror = new ArrayBuffer(this.slotBytes * RING_SLOTS);
    this.mirrorView = new DataView(this.mirror);
    this.mirrorBytes = new Uint8Array(this.mirror);
    this.ring = device.createBuffer({ label: 'webqlora params ring', size: this.mirror.byteLength, usage: BUF_UNIFORM | BUF_COPY_DST });
    this.ringLayout = device.createBindGroupLayout({
      label: 'webqlora params',
      entries: [{ binding: 0, visibility: STAGE_COMPUTE, buffer: { type: 'uniform', hasDynamicOffset: true } }],
    });
    this.ringGroup = device.createBindGroup({ layout: this.ringLayout, entries: [{ binding: 0, resource: { buffer: this.ring, offset: 0, size: this.slotBytes } }] });
    device.lost.then((info) => {
      this.lostInfo = { reason: info.reason, message: info.message };
    });
    device.addEventListener('uncapturederror', (ev) => {
      const err = (ev as GPUUncapturedErrorEvent).error;
      this.firstError ??= { message: err.message, oom: err.constructor?.name === 'GPUOutOfMemoryError' || /out of memory/i.test(err.message) };
    });
  }

  // ---- state ----------------------------------------------------------------------------

  /** Throws once the device is lost, destroyed, or reported an error (never a silent fallback). */
  check(): void {
    if (this.lostInfo && !this.destroyed) {
      const why = this.lostInfo.message ? `${this.lostInfo.reason}: ${this.lostInfo.message}` : this.lostInfo.reason;
      throw new WebqloraError(`the GPU device was lost (${why}); the webgpu backend cannot continue — recreate it, or use --backend wasm.`);
    }
    if (this.destroyed) throw new Error('webgpu backend used after destroy()');
    if (this.firstError?.oom) throw new WebqloraError(`the GPU ran out of memory (${this.firstError.message}); use a smaller batch, --seq-len or model, or --backend wasm.`);
    if (this.firstError) throw new Error(`webgpu: the device reported an error: ${this.firstError.message}`);
  }

  get lost(): boolean {
    return this.lostInfo !== null;
  }

  // ---- buffers --------------------------------------------------------------------------

  createBuf(bytes: number, label: string, usage = BUF_STORAGE | BUF_COPY_SRC | BUF_COPY_DST): Buf {
    const size = Math.max(16, roundUp(bytes, 16)); // whole vec4s for kernels that read array<vec4<f32>>
    const lim = this.device.limits.maxBufferSize;
    if (size > lim) {
      throw new WebqloraError(`${label}: ${(bytes / 2 ** 20).toFixed(0)} MiB is more than this GPU's largest buffer (${(lim / 2 ** 20).toFixed(0)} MiB); use a smaller model or --backend wasm.`);
    }
    const buffer = this.device.createBuffer({ label, size, usage });
    this.stats.buffers++;
    return { id: this.nextId++, buffer, size };
  }

  destroyBuf(b: Buf): void {
    // recorded commands may use it: submit them first (destroy after submit is allowed)
    if (this.enc) this.submit();
    const keys = this.bgByBuf.get(b.id);
    if (keys) {
      for (const k of keys) {
        const g = this.bindGroups.get(k);
        this.bindGroups.delete(k);
        // the group's other buffers (weights, dummies: long-lived) forget it too
        for (const id of g?.ids ?? []) {
          if (id === b.id) continue;
          const s = this.bgByBuf.get(id);
          s?.delete(k);
          if (s?.size === 0) this.bgByBuf.delete(id);
        }
      }
    }
    this.bgByBuf.delete(b.id);
    b.buffer.destroy();
  }

  /** How much the caches hold (a test checks they stay bounded as buffers come and go). */
  bookkeeping(): RuntimeBookkeeping {
    let bufferRefs = 0;
    for (const s of this.bgByBuf.values()) bufferRefs += s.size;
    return {
      bindGroups: this.bindGroups.size, bufferRefs,
      staging: this.staging.length, stagingBytes: this.staging.reduce((a, s) => a + s.size, 0),
    };
  }

  /** The value of wgsl/<mod>.wgsl's module-scope `const name = N` (the host's copy of a shader constant). */
  constant(mod: string, name: string): number {
    const v = this.infos.get(mod)?.consts.get(name);
    if (v === undefined) throw new Error(`webgpu: wgsl/${mod}.wgsl has no module-scope const ${name}`);
    return v;
  }

  /** A persistent buffer of at least `bytes` for internal use (grown, never shrunk). */
  scratchBuf(name: string, bytes: number): Buf {
    const have = this.scratch.get(name);
    if (have && have.size >= bytes) return have;
    if (have) this.destroyBuf(have);
    const b = this.createBuf(Math.max(bytes, 256) * (have ? 2 : 1), `webqlora scratch ${name}`);
    this.scratch.set(name, b);
    return b;
  }

  /**
   * The binding for bytes [start, start + len) of b: the whole buffer when it fits one binding
   * (stable bind-group keys), else (or when forced) the smallest aligned window around the range.
   */
  view(b: Buf, start: number, len: number, what: string, forceWindow = false): View {
    if (b.size <= this.maxBinding && !forceWindow) return { buf: b, offset: 0, size: b.size, shift: start };
    const offset = Math.floor(start / this.align) * this.align;
    const end = Math.min(b.size, Math.max(roundUp(start + len, 4), offset + 4));
    if (end - offset > this.maxBinding) {
      throw new Error(`webgpu ${what}: ${end - offset} bytes exceed one storage binding (${this.maxBinding}) and this kernel does not split them`);
    }
    return { buf: b, offset, size: end - offset, shift: start - offset };
  }

  /** Bytes a split dispatch may cover per operand so that its aligned window fits one binding. */
  get windowBytes(): number {
    return this.maxBinding - this.align - 4;
  }

  private dummy(binding: number): View {
    // one per binding index: a buffer bound writable must not appear in another binding
    const b = (this.dummies[binding] ??= this.createBuf(16, `webqlora unused binding ${binding}`));
    return { buf: b, offset: 0, size: b.size, shift: 0 };
  }

  // ---- pipelines and dispatch ---------------------------------------------------------------

  private module(name: string): Module {
    let m = this.modules.get(name);
    if (m) return m;
    const info = this.infos.get(name);
    const code = WGSL[name];
    if (!info || code === undefined) throw new Error(`webgpu: no wgsl/${name}.wgsl (run node scripts/build.mjs)`);
    const shader = this.device.createShaderModule({ label: `wgsl/${name}.wgsl`, code });
    const bgl = this.device.createBindGroupLayout({
      label: `wgsl/${name}.wgsl @group(1)`,
      entries: info.bindings.map((b) => ({ binding: b.binding, visibility: STAGE_COMPUTE, buffer: { type: b.writable ? 'storage' : 'read-only-storage' } })),
    });
    const layout = this.device.createPipelineLayout({ label: `wgsl/${name}.wgsl`, bindGroupLayouts: [this.ringLayout, bgl] });
    const order = info.bindings.map((_, i) => i).sort((a, b) => info.bindings[a]!.binding - info.bindings[b]!.binding);
    m = { info, shader, bgl, layout, order, fields: new Map(info.params.map((f) => [f.name, f])) };
    this.modules.set(name, m);
    return m;
  }

  private pipeline(mod: string, entry: string, constants: Record<string, number>): GPUComputePipeline {
    // the caller's order is stable per call site: the common case is one look-up, no sort
    let key = `${mod}:${entry}:`;
    for (const n in constants) key += `${n}=${constants[n]},`;
    let p = this.pipelines.get(key);
    if (p) return p;
    const names = Object.keys(constants).sort();
    const sorted = `${mod}:${entry}:${names.map((n) => `${n}=${constants[n]}`).join(',')}`;
    p = this.pipelinesSorted.get(sorted);
    if (!p) {
      const m = this.module(mod);
      if (!m.info.entryPoints.includes(entry)) throw new Error(`webgpu: wgsl/${mod}.wgsl has no entry point ${entry}`);
      for (const n of names) if (!m.info.overrides.has(n)) throw new Error(`webgpu: wgsl/${mod}.wgsl has no override ${n}`);
      p = this.device.createComputePipeline({ label: sorted, layout: m.layout, compute: { module: m.shader, entryPoint: entry, constants } });
      this.pipelinesSorted.set(sorted, p);
      this.stats.pipelines++;
    }
    this.pipelines.set(key, p);
    return p;
  }

  private bindGroup(mod: string, m: Module, views: Record<string, View>, entry: string): GPUBindGroup {
    // the key covers every binding (named or dummy) by buffer id, offset and size
    let key = mod;
    let named = 0;
    for (const i of m.order) {
      const b = m.info.bindings[i]!;
      const given = views[b.name];
      if (given) named++;
      const v = given ?? this.dummy(b.binding);
      key += `|${v.buf.id}:${v.offset}:${v.size}`;
    }
    let count = 0;
    for (const name in views) if (views[name]) count++;
    if (count !== named) {
      const unknown = Object.keys(views).find((name) => !m.info.bindings.some((b) => b.name === name));
      throw new Error(`webgpu ${entry}: wgsl/${mod}.wgsl has no binding ${unknown}`);
    }
    const hit = this.bindGroups.get(key);
    if (hit) return hit.group; // same buffers in the same bindings: it passed the checks below
    const list = m.order.map((i) => {
      const b = m.info.bindings[i]!;
      return { b, v: views[b.name] ?? this.dummy(b.binding) };
    });
    // WebGPU refuses a buffer bound writable together with any other binding of it
    for (const { b, v } of list) {
      if (!b.writable) continue;
      for (const o of list) {
        if (o.b !== b && o.v.buf === v.buf) throw new Error(`webgpu ${entry}: ${b.name} and ${o.b.name} are the same buffer (${v.buf.buffer.label})`);
      }
    }
    const group = this.device.createBindGroup({
      layout: m.bgl,
      entries: list.map(({ b, v }) => ({ binding: b.binding, resource: { buffer: v.buf.buffer, offset: v.offset, size: v.size } })),
    });
    const ids = [...new Set(list.map(({ v }) => v.buf.id))];
    this.bindGroups.set(key, { group, ids });
    for (const id of ids) {
      let s = this.bgByBuf.get(id);
      if (!s) this.bgByBuf.set(id, (s = new Set()));
      s.add(key);
    }
    this.stats.bindGroups++;
    return group;
  }

  /**
   * Records one dispatch of wgsl/<mod>.wgsl's `entry`. `views` maps binding names to windows
   * (bindings not named get a dummy buffer: the entry point must not use them); `params` maps
   * Params field names to values (unnamed fields are 0; an unknown name throws).
   */
  dispatch(mod: string, entry: string, constants: Record<string, number>, views: Record<string, View>, params: Record<string, number>, grid: [number, number, number?]): void {
    this.check();
    const [gx, gy, gz = 1] = grid;
    if (gx === 0 || gy === 0 || gz === 0) return;
    const max = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (gx > max || gy > max || gz > max) throw new Error(`webgpu ${entry}: grid ${gx}×${gy}×${gz} exceeds ${max} workgroups per dimension`);
    const pipe = this.pipeline(mod, entry, constants);
    const m = this.module(mod);
    const bg = this.bindGroup(mod, m, views, entry);
    if (this.slot === RING_SLOTS) this.submit();
    // the slot is all zeros (submit clears the slots it uploaded): write the given fields only
    const base = this.slot * this.slotBytes;
    const dv = this.mirrorView;
    for (const name in params) {
      const f = m.fields.get(name);
      if (!f) {
        this.mirrorBytes.fill(0, base, base + this.slotBytes);
        throw new Error(`webgpu ${entry}: wgsl/${mod}.wgsl Params has no field ${name}`);
      }
      const v = params[name] ?? 0;
      if (f.type === 'f32') dv.setFloat32(base + f.offset, v, true);
      else if (f.type === 'i32') dv.setInt32(base + f.offset, v, true);
      else dv.setUint32(base + f.offset, v >>> 0, true);
    }
    this.slot++;
    const pass = (this.pass ??= this.encoder().beginComputePass());
    pass.setPipeline(pipe);
    pass.setBindGroup(0, this.ringGroup, [base]);
    pass.setBindGroup(1, bg);
    pass.dispatchWorkgroups(gx, gy, gz);
    this.stats.dispatches++;
  }

  /** A 1-D grid of GRID_WG-wide workgroups covering n invocations (wgsl/grid.wgsl folds y into x). */
  grid1d(n: number): [number, number] {
    return this.fold(Math.ceil(n / this.gridWg));
  }

  /** `groups` workgroups as x·y ≤ 65535² (kernels index wid.y·nwg.x + wid.x and skip the excess). */
  fold(groups: number): [number, number] {
    const max = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (groups <= max) return [groups, 1];
    const y = Math.ceil(groups / max);
    return [Math.ceil(groups / y), y];
  }

  // ---- copies, writes, readback ------------------------------------------------------------

  private encoder(): GPUCommandEncoder {
    return (this.enc ??= this.device.createCommandEncoder({ label: 'webqlora' }));
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  copyBuffer(src: Buf, srcOffset: number, dst: Buf, dstOffset: number, bytes: number): void {
    this.check();
    this.endPass();
    this.encoder().copyBufferToBuffer(src.buffer, srcOffset, dst.buffer, dstOffset, bytes);
  }

  clear(b: Buf, offset: number, bytes: number): void {
    this.check();
    this.endPass();
    this.encoder().clearBuffer(b.buffer, offset, bytes);
  }

  /** Host bytes into b at a 4-byte aligned offset (length a multiple of 4), after everything recorded so far. */
  writeBuffer(b: Buf, offset: number, data: Uint8Array): void {
    this.check();
    if (this.enc) this.submit(); // recorded kernels must still see the old contents
    // a view of shared memory (threaded WASM) is copied: writeBuffer takes plain ArrayBuffers
    const src = typeof SharedArrayBuffer !== 'undefined' && data.buffer instanceof SharedArrayBuffer ? data.slice() : data;
    this.device.queue.writeBuffer(b.buffer, offset, src.buffer as ArrayBuffer, src.byteOffset, src.byteLength);
  }

  /** Sends everything recorded so far to the queue. */
  submit(): void {
    if (!this.enc) return;
    this.endPass();
    if (this.slot > 0) {
      const used = this.slot * this.slotBytes;
      this.device.queue.writeBuffer(this.ring, 0, this.mirror, 0, used); // copies the bytes now
      this.mirrorBytes.fill(0, 0, used);
    }
    this.device.queue.submit([this.enc.finish()]);
    this.enc = null;
    this.slot = 0;
    this.stats.submits++;
  }

  async flush(): Promise<void> {
    this.check();
    this.submit();
    await this.device.queue.onSubmittedWorkDone();
    this.check();
  }

  /** Bytes [offset, offset + bytes) of b, after all recorded work. */
  async read(b: Buf, offset: number, bytes: number): Promise<ArrayBuffer> {
    this.check();
    const a0 = Math.floor(offset / 4) * 4;
    const n = roundUp(offset + bytes, 4) - a0;
    if (n === 0) return new ArrayBuffer(0);
    const st = this.takeStaging(n);
    let keep = false;
    try {
      this.endPass();
      this.encoder().copyBufferToBuffer(b.buffer, a0, st, 0, n);
      this.submit();
      try {
        await st.mapAsync(MAP_READ, 0, n);
      } catch (e) {
        this.check();
        throw e;
      }
      const out = st.getMappedRange(0, n).slice(offset - a0, offset - a0 + bytes);
      st.unmap();
      // a large one (a rare big read) is not held for the rest of the run
      keep = st.size <= STAGING_KEEP_BYTES;
      this.check();
      return out;
    } finally {
      if (keep) this.staging.push(st);
      else st.destroy(); // too large, or mapping failed: it may be left in any state
    }
  }

  private takeStaging(bytes: number): GPUBuffer {
    let best = -1;
    for (let i = 0; i < this.staging.length; i++) {
      const s = this.staging[i]!;
      if (s.size >= bytes && (best < 0 || s.size < this.staging[best]!.size)) best = i;
    }
    if (best >= 0) return this.staging.splice(best, 1)[0]!;
    const size = 2 ** Math.ceil(Math.log2(Math.max(bytes, 65536)));
    this.stats.buffers++;
    return this.device.createBuffer({ label: 'webqlora readback', size, usage: BUF_MAP_READ | BUF_COPY_DST });
  }

  destroy(): void {
    if (this.destroyed) return;
    this.enc = null;
    this.pass = null;
    this.destroyed = true;
    this.bindGroups.clear();
    this.bgByBuf.clear();
    this.staging.length = 0;
    this.device.destroy();
  }
}
