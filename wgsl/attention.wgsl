// Causal grouped-query attention (backend.ts): Backend.attention ↔ attention,
// Backend.attentionBackward ↔ attention_backward (dq and Di) then attention_backward_kv (dk, dv).
//
// Shapes (legend of backend.ts): q, out, dq, dout [B·T, H, D]; k, v, dk, dv [B, kvStride, KVH, D];
// lse, Di [B, H, T]. Query head h reads kv head h / (H / KVH); query t (at p = pos0 + t) attends
// keys p − window < j ≤ p (window 0: 0 ≤ j ≤ p). score = f32(q·k)·scale, then with softcap > 0
// score ← softcap·tanh(score / softcap) (Gemma 2); the backward multiplies dS by 1 − tanh².
// Packed sequences (has_doc = 1; training shapes pos0 = 0, S = T): query t attends only to keys
// j ≥ docStart[b·T + t], the first row of its example, as well; a row's examples are contiguous,
// so docStart never decreases along a row. docStart comes through the `di` binding (the forward
// binds the tensor itself; the backward copies it into its Di scratch), ds_off words in.
// Key (query) tiles outside every row's window or example are not staged at all; within a tile
// the rows outside a row's window or example are skipped.
//
// One invocation per query row (forward, dq) or per key row (dk, dv), WG rows per workgroup;
// the other side's rows are staged KT at a time in workgroup memory. Rows are D ≤ 4·MAX_D4
// floats held as D4 = D/4 vec4s in private arrays (D4 is an override: one pipeline per head
// dim, constant loop bounds). Cache rows ≥ S are never read (they may hold NaN).
//
//   forward:  online softmax over key tiles (FlashAttention): running max mx, sum l, acc = Σ p·v;
//             out = acc / l, lse = mx + log l.
//   backward: P_tj = exp(q_t·k_j·scale − lse_t), Di_t = Σ_d dout·out,
//             dS_tj = P_tj·(dout_t·v_j − Di_t); dq_t = scale·Σ_j dS_tj·k_j,
//             dk_j = Σ_t (dS_tj·scale)·q_t, dv_j = Σ_t P_tj·dout_t (sums over the heads of a group).
//             dq needs no atomics because dk/dv are gathered per key by a second kernel.
//
// tanh is tanh_f32 (tanh.wgsl), not the builtin: WGSL promises only the accuracy of
// sinh(x)/cosh(x) (absolute, not relative, near 0), and a soft-cap of 50 multiplies that by 50.

// #include "tanh.wgsl"

struct Params {
  B: u32,
  T: u32,
  S: u32,
  H: u32,
  KVH: u32,
  pos0: u32,
  kv_stride: u32,
  scale: f32,
  /** 0: no soft-cap */
  softcap: f32,
  /** 0: unlimited (the host also passes 0 for a window no query exceeds) */
  window: u32,
  // where this dispatch's first sequence starts in the bindings (the host splits the batch when
  // a tensor is larger than one binding): vec4s of q/out/dout/dq, of k/v/dk/dv; floats of lse/Di
  q_off: u32,
  kv_off: u32,
  l_off: u32,
  /** 1: packed sequences, docStart [B, T] at di[ds_off ..] */
  has_doc: u32,
  ds_off: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
// Eight storage bindings (the WebGPU default limit per stage); the two outputs are reused:
/** attention: out; attention_backward: dq; attention_backward_kv: dk */
@group(1) @binding(0) var<storage, read_write> o: array<vec4<f32>>;
/** attention_backward: the forward's out (read); attention_backward_kv: dv */
@group(1) @binding(1) var<storage, read_write> o2: array<vec4<f32>>;
@group(1) @binding(2) var<storage, read_write> lse: array<f32>;
@group(1) @binding(3) var<storage, read> q: array<vec4<f32>>;
@group(1) @binding(4) var<storage, read> k: array<vec4<f32>>;
@group(1) @binding(5) var<storage, read> v: array<vec4<f32>>;
@group(1) @binding(6) var<storage, read> dout: array<vec4<f32>>;
/** Di [B, H, T] (f32 bits), written by attention_backward for attention_backward_kv; and docStart
 *  [B, T] (i32 ≥ 0) at ds_off when has_doc (attention binds the docStart tensor itself here) */
@group(1) @binding(7) var<storage, read_write> di: array<u32>;

/** head dim / 4 (one pipeline per head dim) */
override D4: u32 = 16u;
/** rows staged per tile, ≤ MAX_KT (chosen by the host from the workgroup memory limit) */
override KT: u32 = 16u;
/** invocations (= own rows) per workgroup */
override WG: u32 = 32u;

const MAX_D4 = 32u;
const MAX_KT = 32u;
/** below any score; exp(NEG - x) is 0 */
const NEG = -3.0e38;

var<workgroup> t0: array<vec4<f32>, KT * D4>;
var<workgroup> t1: array<vec4<f32>, KT * D4>;
var<workgroup> s0: array<f32, MAX_KT>;
var<workgroup> s1: array<f32, MAX_KT>;
/** docStart of the staged query rows (attention_backward_kv) */
var<workgroup> s2: array<u32, MAX_KT>;
/** one docStart shared by the workgroup, read back with workgroupUniformLoad (a loop bound) */
var<workgroup> ds_tile: u32;

/** vec4 index of kv row j of sequence bi, kv head kh */
fn kv_row(bi: u32, j: u32, kh: u32) -> u32 {
  return P.kv_off + ((bi * P.kv_stride + j) * P.KVH + kh) * D4;
}

/** vec4 index of query row t of sequence bi, head h */
fn q_row(bi: u32, t: u32, h: u32) -> u32 {
  return P.q_off + ((bi * P.T + t) * P.H + h) * D4;
}

/** index of the lse / Di entry of query row t of sequence bi, head h */
fn l_row(bi: u32, h: u32, t: u32) -> u32 {
  return P.l_off + (bi * P.H + h) * P.T + t;
}

/** Where an invocation of attention / attention_backward sits: wid.x is a tile of WG query
 *  rows, wid.y is b·H + h. Rows t ≥ T (not live) read row T − 1 and write nothing. */
struct QueryRow {
  bi: u32,
  h: u32,
  /** the kv head of h */
  kh: u32,
  t: u32,
  live: bool,
  /** q_row of t (of T − 1 when not live) */
  qo: u32,
}

fn query_row(wid: vec3u, lid: u32) -> QueryRow {
  let bi = wid.y / P.H;
  let h = wid.y % P.H;
  let t = wid.x * WG + lid;
  return QueryRow(bi, h, h / (P.H / P.KVH), t, t < P.T, q_row(bi, min(t, P.T - 1u), h));
}

fn hsum(v: vec4<f32>) -> f32 {
  return (v.x + v.y) + (v.z + v.w);
}

/** The first key that absolute position p attends (the window start; 0 without a window). */
fn first_key(p: u32) -> u32 {
  if (P.window == 0u || p < P.window) {
    return 0u;
  }
  return p + 1u - P.window;
}

/** The first row of the example of row t of sequence bi (packed sequences; else 0). */
fn doc_start(bi: u32, t: u32) -> u32 {
  if (P.has_doc == 0u) {
    return 0u;
  }
  return di[P.ds_off + bi * P.T + t];
}

/** The first key any query row of the tile starting at row t0 attends (pos0 = 0 with docStart):
 *  its first row's, since window and example starts never decrease along a row. Uniform. */
fn tile_first_key(lid: u32, bi: u32, t0: u32) -> u32 {
  if (lid == 0u) {
    ds_tile = doc_start(bi, t0);
  }
  return max(first_key(P.pos0 + t0), workgroupUniformLoad(&ds_tile));
}

/** Stages kv rows j0 .. j0+KT−1 (those ≤ last; zeros after) of k into t0 and of v into t1. */
fn stage_kv(lid: u32, bi: u32, kh: u32, j0: u32, last: u32) {
  for (var e = lid; e < KT * D4; e += WG) {
    let j = j0 + e / D4;
    var kx = vec4<f32>();
    var vx = vec4<f32>();
    if (j <= last) {
      let off = kv_row(bi, j, kh) + e % D4;
      kx = k[off];
      vx = v[off];
    }
    t0[e] = kx;
    t1[e] = vx;
  }
}

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = query_row(wid, lid);
  let t = r.t;
  let live = r.live;
  let qo = r.qo;
  var qr: array<vec4<f32>, MAX_D4>;
  var acc: array<vec4<f32>, MAX_D4>;
  for (var d = 0u; d < D4; d++) {
    qr[d] = q[qo + d];
    acc[d] = vec4<f32>();
  }
  var mx = NEG;
  var l = 0.0;
  let jmax = P.pos0 + t; // this row's last key
  let jmin = max(first_key(jmax), doc_start(r.bi, min(t, P.T - 1u))); // and its first
  // the keys any row of this workgroup needs (pos0 + T ≤ S)
  let last = P.pos0 + min(wid.x * WG + WG, P.T) - 1u;
  let first = tile_first_key(lid, r.bi, wid.x * WG);
  for (var j0 = first; j0 <= last; j0 += KT) {
    workgroupBarrier();
    stage_kv(lid, r.bi, r.kh, j0, last);
    workgroupBarrier();
    if (live && j0 <= jmax && j0 + KT > jmin) {
      var sc: array<f32, MAX_KT>;
      var tmax = mx;
      for (var jj = 0u; jj < KT; jj++) {
        if (j0 + jj <= jmax && j0 + jj >= jmin) {
          var dot = vec4<f32>();
          for (var d = 0u; d < D4; d++) {
            dot += qr[d] * t0[jj * D4 + d];
          }
          var s = hsum(dot) * P.scale;
          if (P.softcap > 0.0) {
            s = P.softcap * tanh_f32(s / P.softcap);
          }
          sc[jj] = s;
          tmax = max(tmax, s);
        }
      }
      // rescale what was accumulated under the old maximum once per tile
      let corr = exp(mx - tmax);
      l = l * corr;
      for (var d = 0u; d < D4; d++) {
        acc[d] = acc[d] * corr;
      }
      for (var jj = 0u; jj < KT; jj++) {
        if (j0 + jj <= jmax && j0 + jj >= jmin) {
          let p = exp(sc[jj] - tmax);
          l = l + p;
          for (var d = 0u; d < D4; d++) {
            acc[d] += p * t1[jj * D4 + d];
          }
        }
      }
      mx = tmax;
    }
  }
  if (live) {
    for (var d = 0u; d < D4; d++) {
      o[qo + d] = acc[d] / l;
    }
    lse[l_row(r.bi, r.h, t)] = mx + log(l);
  }
}

@compute @workgroup_size(WG)
fn attention_backward(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  // dq and Di of one query row per invocation (pos0 = 0)
  let r = query_row(wid, lid);
  let t = r.t;
  let live = r.live;
  let qo = r.qo;
  var qr: array<vec4<f32>, MAX_D4>;
  var gr: array<vec4<f32>, MAX_D4>;
  var acc: array<vec4<f32>, MAX_D4>;
  var dsum4 = vec4<f32>();
  for (var d = 0u; d < D4; d++) {
    qr[d] = q[qo + d];
    gr[d] = dout[qo + d];
    acc[d] = vec4<f32>();
    dsum4 += gr[d] * o2[qo + d];
  }
  let dsum = hsum(dsum4);
  let li = l_row(r.bi, r.h, min(t, P.T - 1u));
  let l = lse[li];
  let jmin = max(first_key(t), doc_start(r.bi, min(t, P.T - 1u)));
  let last = min(wid.x * WG + WG, P.T) - 1u;
  for (var j0 = tile_first_key(lid, r.bi, wid.x * WG); j0 <= last; j0 += KT) {
    workgroupBarrier();
    stage_kv(lid, r.bi, r.kh, j0, last);
    workgroupBarrier();
    if (live) {
      for (var jj = 0u; jj < KT; jj++) {
        if (j0 + jj <= t && j0 + jj >= jmin) {
          var dot = vec4<f32>();
          var dp = vec4<f32>();
          for (var d = 0u; d < D4; d++) {
            dot += qr[d] * t0[jj * D4 + d];
            dp += gr[d] * t1[jj * D4 + d];
          }
          var s = hsum(dot) * P.scale;
          var dcap = 1.0;
          if (P.softcap > 0.0) {
            let th = tanh_f32(s / P.softcap);
            s = P.softcap * th;
            dcap = 1.0 - th * th;
          }
          let p = exp(s - l);
          let ds = p * (hsum(dp) - dsum) * dcap;
          for (var d = 0u; d < D4; d++) {
            acc[d] += ds * t0[jj * D4 + d];
          }
        }
      }
    }
  }
  if (live) {
    for (var d = 0u; d < D4; d++) {
      o[qo + d] = acc[d] * P.scale;
    }
    di[li] = bitcast<u32>(dsum);
  }
}

@compute @workgroup_size(WG)
fn attention_backward_kv(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  // dk, dv of one key row per invocation: wid.x tile of WG key rows of [0, kvStride), wid.y b·KVH + kh.
  // Queries see keys ≤ t only, so keys ≥ T (and the padding rows ≥ S) get zeros; with a window
  // key j is seen by queries j ≤ t < j + window only; packed, by queries of its own example only.
  let bi = wid.y / P.KVH;
  let kh = wid.y % P.KVH;
  let group = P.H / P.KVH;
  let j = wid.x * WG + lid;
  let live = j < P.T;
  let ko = kv_row(bi, min(j, P.T - 1u), kh);
  var kr: array<vec4<f32>, MAX_D4>;
  var vr: array<vec4<f32>, MAX_D4>;
  var gk: array<vec4<f32>, MAX_D4>;
  var gv: array<vec4<f32>, MAX_D4>;
  for (var d = 0u; d < D4; d++) {
    kr[d] = k[ko + d];
    vr[d] = v[ko + d];
    gk[d] = vec4<f32>();
    gv[d] = vec4<f32>();
  }
  let first = wid.x * WG; // the first query that can see a key of this tile
  // one past the last query that can (the tile's last key + window − 1)
  var tend = P.T;
  if (P.window != 0u) {
    tend = min(P.T, first + WG - 1u + P.window);
  }
  let jlast = first + WG - 1u; // the tile's last key
  for (var hh = 0u; hh < group; hh++) {
    let h = kh * group + hh;
    for (var tq = first; tq < tend; tq += KT) {
      if (lid == 0u) {
        ds_tile = doc_start(bi, tq);
      }
      // a barrier (the previous tile's reads are done) that also shares the value: queries from
      // tq on start their examples after every key of this tile, so none of them sees one
      if (workgroupUniformLoad(&ds_tile) > jlast) {
        break;
      }
      // stage q rows into t0, dout rows into t1, lse, Di and docStart into s0, s1, s2
      for (var e = lid; e < KT * D4; e += WG) {
        let t = tq + e / D4;
        var qx = vec4<f32>();
        var gx = vec4<f32>();
        if (t < P.T) {
          let off = q_row(bi, t, h) + e % D4;
          qx = q[off];
          gx = dout[off];
        }
        t0[e] = qx;
        t1[e] = gx;
      }
      for (var e = lid; e < KT; e += WG) {
        let t = tq + e;
        var lx = 0.0;
        var dx = 0.0;
        var sx = 0u;
        if (t < P.T) {
          lx = lse[l_row(bi, h, t)];
          dx = bitcast<f32>(di[l_row(bi, h, t)]);
          sx = doc_start(bi, t);
        }
        s0[e] = lx;
        s1[e] = dx;
        s2[e] = sx;
      }
      workgroupBarrier();
      if (live) {
        for (var tt = 0u; tt < KT; tt++) {
          let t = tq + tt;
          if (t < P.T && t >= j && (P.window == 0u || t - j < P.window) && s2[tt] <= j) {
            var dot = vec4<f32>();
            var dp = vec4<f32>();
            for (var d = 0u; d < D4; d++) {
              dot += t0[tt * D4 + d] * kr[d];
              dp += t1[tt * D4 + d] * vr[d];
            }
            var s = hsum(dot) * P.scale;
            var dcap = 1.0;
            if (P.softcap > 0.0) {
              let th = tanh_f32(s / P.softcap);
              s = P.softcap * th;
              dcap = 1.0 - th * th;
            }
            let p = exp(s - s0[tt]);
            let ds = p * (hsum(dp) - s1[tt]) * dcap * P.scale;
            for (var d = 0u; d < D4; d++) {
              gk[d] += ds * t0[tt * D4 + d];
              gv[d] += p * t1[tt * D4 + d];
            }
          }
        }
      }
    }
  }
  if (j < P.kv_stride) {
    let wo = kv_row(bi, j, kh);
    for (var d = 0u; d < D4; d++) {
      o[wo + d] = gk[d];
      o2[wo + d] = gv[d];
    }
  }
}
