// What the host needs to know about a wgsl/ module, read from the shader source itself so the
// names live in one place (STYLE.md §2): its entry points, its storage bindings (@group(1), by
// variable name, with their access mode), the fields of its `Params` uniform struct (@group(0)
// @binding(0), written by the host into the params ring in declaration order), its override
// constants and the values of its module-scope `const X = N` numbers (tile sizes, array bounds:
// the host derives its own from these instead of typing them twice). Parsing is deliberately
// narrow: the wgsl/ files follow these conventions.

export interface ParamField {
  name: string;
  type: 'u32' | 'i32' | 'f32';
  /** byte offset in the struct (every field is a 4-byte scalar) */
  offset: number;
}

export interface StorageBinding {
  name: string;
  binding: number;
  writable: boolean;
}

export interface ModuleInfo {
  entryPoints: string[];
  bindings: StorageBinding[];
  params: ParamField[];
  overrides: Set<string>;
  /** module-scope `const NAME = <number literal>;` declarations (includes resolved) */
  consts: Map<string, number>;
}

/** Removes line and block comments (WGSL has both; block comments may nest). */
function stripComments(src: string): string {
  let out = '';
  let depth = 0;
  for (let i = 0; i < src.length; i++) {
    if (src.startsWith('/*', i)) { depth++; i++; continue; }
    if (depth > 0) {
      if (src.startsWith('*/', i)) { depth--; i++; }
      continue;
    }
    if (src.startsWith('//', i)) {
      const nl = src.indexOf('\n', i);
      i = nl < 0 ? src.length : nl - 1;
      continue;
    }
    out += src[i];
  }
  return out;
}

/** The text outside every `{ … }` (module scope: function and struct bodies removed). */
function moduleScope(src: string): string {
  let out = '';
  let depth = 0;
  for (const c of src) {
    if (c === '{') depth++;
    else if (c === '}') depth--;
    else if (depth === 0) out += c;
  }
  return out;
}

export function reflectWgsl(name: string, source: string): ModuleInfo {
  const src = stripComments(source);
  const entryPoints = [...src.matchAll(/@compute\s+@workgroup_size\([^)]*\)\s*fn\s+(\w+)/g)].map((m) => m[1]!);
  const bindings: StorageBinding[] = [];
  let params: ParamField[] | null = null;
  for (const m of src.matchAll(/@group\((\d+)\)\s*@binding\((\d+)\)\s*var<(\w+)(?:\s*,\s*(\w+))?>\s*(\w+)\s*:\s*([\w<>, ]+?)\s*;/g)) {
    const [, group, binding, space, access, varName, type] = m;
    if (group === '0') {
      if (binding !== '0' || space !== 'uniform' || type !== 'Params') throw new Error(`wgsl/${name}.wgsl: @group(0) holds only @binding(0) var<uniform> P: Params`);
      continue;
    }
    if (group !== '1' || space !== 'storage') throw new Error(`wgsl/${name}.wgsl: ${varName}: storage buffers go in @group(1)`);
    bindings.push({ name: varName!, binding: Number(binding), writable: access === 'read_write' });
  }
  const st = /struct\s+Params\s*\{([^}]*)\}/.exec(src);
  if (st) {
    params = [];
    for (const f of st[1]!.split(',').map((s) => s.trim()).filter(Boolean)) {
      const fm = /^(\w+)\s*:\s*(u32|i32|f32)$/.exec(f);
      if (!fm) throw new Error(`wgsl/${name}.wgsl: Params field '${f}' is not a u32/i32/f32 scalar`);
      params.push({ name: fm[1]!, type: fm[2] as ParamField['type'], offset: params.length * 4 });
    }
  }
  if (!params) throw new Error(`wgsl/${name}.wgsl: no struct Params`);
  const overrides = new Set([...src.matchAll(/\boverride\s+(\w+)\s*:/g)].map((m) => m[1]!));
  const consts = new Map<string, number>();
  for (const m of moduleScope(src).matchAll(/\bconst\s+(\w+)\s*(?::\s*\w+\s*)?=\s*([^;]*);/g)) {
    const lit = /^(-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[uif]?$/.exec(m[2]!.trim());
    if (!lit) continue; // an expression: not needed by the host
    if (consts.has(m[1]!)) throw new Error(`wgsl/${name}.wgsl: const ${m[1]} declared twice`);
    consts.set(m[1]!, Number(lit[1]));
  }
  const seen = new Set<number>();
  for (const b of bindings) {
    if (seen.has(b.binding)) throw new Error(`wgsl/${name}.wgsl: @binding(${b.binding}) declared twice`);
    seen.add(b.binding);
  }
  return { entryPoints, bindings, params, overrides, consts };
}
