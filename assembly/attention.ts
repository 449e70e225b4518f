// Causal grouped-query attention with a KV-cache layout, forward and backward.
// Backend.attention ↔ attention, Backend.attentionBackward ↔ attention_backward.
//   q, out, dq, dout f32 [B·T, H, D]; k, v, dk, dv f32 [B, kvStride, KVH, D] (rows 0..S-1 valid);
//   lse f32 [B, H, T]. Query t of a sequence sits at absolute position p = pos0 + t and attends to
//   keys max(0, p − window + 1) .. min(S − 1, p) (window 0: from key 0). Query head h reads kv
//   head floor(h / (H / KVH)). score = (q·k)·scale (the host passes 1/√D by default), then with
//   softcap > 0 score ← softcap·tanh(score / softcap) (Gemma 2), whose derivative 1 − tanh² the
//   backward multiplies into dS. Keys outside the window are never scored, not masked.
//   Packed sequences (docStart ≠ 0: i32 [B·T], training shapes pos0 = 0, S = T): query t also
//   starts at docStart[b·T + t], the first row of its example; a row's examples are contiguous
//   (the host checks), so docStart never decreases along a row and neither does a query's first key.
// The forward is flash-style: per query row one pass over the keys in blocks of KB with an
// online softmax (running max m, running sum l, output accumulator rescaled when m grows), so
// no [T, S] score matrix exists; it keeps lse = m + log(l) for the backward, which recomputes
// p = exp(score − lse) instead of storing probabilities.
// exp/log are Mathf (musl expf/logf ports, < 1 ulp) and sums are f32 in a different order than
// the reference: expect relative differences ~1e-6·sqrt(S).
import { dot } from './panel';
import { madd, hmax } from './simd';
import { ATTN_KB, ATTN_TQ } from './abi';

/** keys scored per block of the online softmax and of the backward; query rows per backward tile (abi.ts: the host splits by them) */
const KB: i32 = ATTN_KB;
const TQ: i32 = ATTN_TQ;

@inline function zero(p: usize, n: i32): void {
  memory.fill(p, 0, <usize>n << 2);
}

/** y[0..n) = a·x[0..n) (y may be x) */
@inline function scaleTo(y: usize, a: f32, x: usize, n: i32): void {
  const av = f32x4.splat(a);
  let i: i32 = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(y + o, f32x4.mul(av, v128.load(x + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(y + o, a * load<f32>(x + o));
  }
}

/**
 * Four dot products in one f32x4: lane c = x·y_c over n, y_c = y0 + c·stride (bytes).
 * One load of x serves four rows of y; the lanes are reduced with a 4×4 transpose-add.
 */
@inline function dot4(x: usize, y0: usize, stride: usize, n: i32): v128 {
  const y1 = y0 + stride, y2 = y1 + stride, y3 = y2 + stride;
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0), s2 = f32x4.splat(0), s3 = f32x4.splat(0);
  let k: i32 = 0;
  for (; k + 4 <= n; k += 4) {
    const o = <usize>k << 2;
    const xv = v128.load(x + o);
    s0 = madd(xv, v128.load(y0 + o), s0);
    s1 = madd(xv, v128.load(y1 + o), s1);
    s2 = madd(xv, v128.load(y2 + o), s2);
    s3 = madd(xv, v128.load(y3 + o), s3);
  }
  const t0 = f32x4.add(i32x4.shuffle(s0, s1, 0, 4, 1, 5), i32x4.shuffle(s0, s1, 2, 6, 3, 7));
  const t1 = f32x4.add(i32x4.shuffle(s2, s3, 0, 4, 1, 5), i32x4.shuffle(s2, s3, 2, 6, 3, 7));
  let r = f32x4.add(i64x2.shuffle(t0, t1, 0, 2), i64x2.shuffle(t0, t1, 1, 3));
  for (; k < n; k++) {
    const o = <usize>k << 2;
    const yv = f32x4.replace_lane(f32x4.replace_lane(f32x4.replace_lane(f32x4.splat(load<f32>(y0 + o)), 1, load<f32>(y1 + o)), 2, load<f32>(y2 + o)), 3, load<f32>(y3 + o));
    r = f32x4.add(r, f32x4.mul(f32x4.splat(load<f32>(x + o)), yv));
  }
  return r;
}

/**
 * out[j] = scale · x·y_j for j < ns, y_j = y0 + j·stride; four rows at a time. Returns max_j out[j].
 */
@inline function dotRows(out: usize, x: usize, y0: usize, stride: usize, ns: i32, n: i32, scale: f32): f32 {
  const sv = f32x4.splat(scale);
  let mv = f32x4.splat(-Infinity);
  let j: i32 = 0;
  for (; j + 4 <= ns; j += 4) {
    const v = f32x4.mul(dot4(x, y0 + <usize>j * stride, stride, n), sv);
    v128.store(out + (<usize>j << 2), v);
    mv = f32x4.max(mv, v);
  }
  let m = hmax(mv);
  for (; j < ns; j++) {
    const v = dot(x, y0 + <usize>j * stride, n) * scale;
    store<f32>(out + (<usize>j << 2), v);
    m = max(m, v);
  }
  return m;
}

/**
 * acc[0..n) += Σ_j (w_j·scale)·y_j for j < ns, w_j at w + j·ws, y_j = y0 + j·stride (bytes).
 * Sixteen floats of acc stay in four registers across all ns rows, so acc is loaded and stored
 * once per call, not once per row. scale 1 leaves every weight exactly as it is (w·1 = w).
 */
@inline function accumRows(acc: usize, w: usize, ws: usize, y0: usize, stride: usize, ns: i32, n: i32, scale: f32): void {
  const sv = f32x4.splat(scale);
  let c: i32 = 0;
  for (; c + 16 <= n; c += 16) {
    const ao = acc + (<usize>c << 2);
    let a0 = v128.load(ao), a1 = v128.load(ao, 16), a2 = v128.load(ao, 32), a3 = v128.load(ao, 48);
    let y = y0 + (<usize>c << 2);
    for (let j: i32 = 0; j < ns; j++) {
      const p = f32x4.mul(v128.load32_splat(w + <usize>j * ws), sv);
      a0 = madd(p, v128.load(y), a0);
      a1 = madd(p, v128.load(y, 16), a1);
      a2 = madd(p, v128.load(y, 32), a2);
      a3 = madd(p, v128.load(y, 48), a3);
      y += stride;
    }
    v128.store(ao, a0); v128.store(ao, a1, 16); v128.store(ao, a2, 32); v128.store(ao, a3, 48);
  }
  for (; c + 4 <= n; c += 4) {
    const ao = acc + (<usize>c << 2);
    let a0 = v128.load(ao);
    let y = y0 + (<usize>c << 2);
    for (let j: i32 = 0; j < ns; j++) {
      a0 = madd(f32x4.mul(v128.load32_splat(w + <usize>j * ws), sv), v128.load(y), a0);
      y += stride;
    }
    v128.store(ao, a0);
  }
  for (; c < n; c++) {
    const ao = acc + (<usize>c << 2);
    let a = load<f32>(ao);
    for (let j: i32 = 0; j < ns; j++) a += (load<f32>(w + <usize>j * ws) * scale) * load<f32>(y0 + <usize>j * stride + (<usize>c << 2));
    store<f32>(ao, a);
  }
}

/** s[j] ← cap·tanh(s[j] / cap) for j < ns (the soft-cap of the scores). Returns max_j s[j]. */
@inline function capRows(s: usize, ns: i32, cap: f32): f32 {
  let m: f32 = -Infinity;
  for (let j: i32 = 0; j < ns; j++) {
    const o = <usize>j << 2;
    const y = cap * Mathf.tanh(load<f32>(s + o) / cap);
    store<f32>(s + o, y);
    m = max(m, y);
  }
  return m;
}

/** The first key query t of sequence b sees: the window start (0 without one), or its example's start if later. */
@inline function firstKey(docStart: usize, b: i32, T: i32, t: i32, pos0: i32, window: i32): i32 {
  let f = window > 0 ? max(0, pos0 + t + 1 - window) : 0;
  if (docStart != 0) f = max(f, load<i32>(docStart + (<usize>(b * T + t) << 2)));
  return f;
}

/**
 * Writes out and lse. scratch: this thread's area (KB + D floats used).
 * Work range: (sequence, query head) pairs bh = b·H + h in [bh0, bh1).
 */
export function attention(out: usize, lse: usize, q: usize, k: usize, v: usize, B: i32, T: i32, S: i32, H: i32, KVH: i32, D: i32, pos0: i32, kvStride: i32, scale: f32, softcap: f32, window: i32, docStart: usize, scratch: usize, bh0: i32, bh1: i32): void {
  const rep = H / KVH;
  const scores = scratch;
  const acc = scratch + (<usize>KB << 2);
  const rowKV = (<usize>KVH * <usize>D) << 2; // bytes from key s to key s + 1
  for (let bh = bh0; bh < bh1; bh++) {
    const b = bh / H, h = bh % H, g = h / rep;
    const kb = k + ((<usize>(b * kvStride * KVH + g) * <usize>D) << 2);
    const vb = v + ((<usize>(b * kvStride * KVH + g) * <usize>D) << 2);
    for (let t: i32 = 0; t < T; t++) {
      const qo = (<usize>((b * T + t) * H + h) * <usize>D) << 2;
      const qr = q + qo;
      const nk = min(S, pos0 + t + 1);
      const first = firstKey(docStart, b, T, t, pos0, window);
      let m: f32 = -Infinity, l: f32 = 0;
      zero(acc, D);
      for (let s0: i32 = first; s0 < nk; s0 += KB) {
        const ns = min(KB, nk - s0);
        let bmax = dotRows(scores, qr, kb + <usize>s0 * rowKV, rowKV, ns, D, scale);
        if (softcap > 0) bmax = capRows(scores, ns, softcap);
        if (bmax > m) {
          if (l != 0) {
            // the running max grew: rescale what was accumulated under the old one
            const corr = Mathf.exp(m - bmax);
            l *= corr;
            scaleTo(acc, corr, acc, D);
          }
          m = bmax;
        }
        for (let j: i32 = 0; j < ns; j++) {
          const p = Mathf.exp(load<f32>(scores + (<usize>j << 2)) - m);
          store<f32>(scores + (<usize>j << 2), p);
          l += p;
        }
        accumRows(acc, scores, 4, vb + <usize>s0 * rowKV, rowKV, ns, D, 1);
      }
      scaleTo(out + qo, 1.0 / l, acc, D);
      store<f32>(lse + ((<usize>((b * H + h) * T + t)) << 2), m + Mathf.log(l));
    }
  }
}


/**
 * P and dS of the tile's rows [0, tq) (queries t0 + i of sequence b, head h) against keys
 * [s0, s0 + ns): P = exp(score − lse), dS = P ⊙ (dO·Vᵀ − Di) (× (1 − tanh²) with a soft-cap), zero
 * where a row does not see a key. With dq0 ≠ 0, row i's dq (at dq0 + i·rowQ) += dS_i·K as soon as
 * its row is formed. kb, vb: key/value row 0 of this sequence and kv head; Dt: the tile's Di.
 * Each score is a dot product grouped in fours from the row's first key of the block, so a key's
 * bits depend on s0 and the row: every caller walks a tile's keys in the same blocks (from the
 * tile's first key, KB at a time) and gets the same P and dS.
 */
@inline function tileBlock(P: usize, dS: usize, Dt: usize, q0: usize, do0: usize, dq0: usize, kb: usize, vb: usize, lse: usize,
  b: i32, h: i32, H: i32, T: i32, S: i32, D: i32, t0: i32, tq: i32, s0: i32, ns: i32, pos0: i32, window: i32, docStart: usize,
  scale: f32, softcap: f32, rowQ: usize, rowKV: usize): void {
  const rowP = <usize>KB << 2;
  const k0 = kb + <usize>s0 * rowKV, v0 = vb + <usize>s0 * rowKV;
  for (let i: i32 = 0; i < tq; i++) {
    const t = t0 + i;
    const pi = P + <usize>i * rowP, di = dS + <usize>i * rowP;
    // keys [s0 + j0, s0 + nv) of the block are this query's (causal end, window or example start)
    const nv = max(0, min(ns, min(S, pos0 + t + 1) - s0));
    const j0 = min(nv, max(0, firstKey(docStart, b, T, t, pos0, window) - s0));
    const pj = pi + (<usize>j0 << 2), dj = di + (<usize>j0 << 2), kj = k0 + <usize>j0 * rowKV;
    const qr = q0 + <usize>i * rowQ, dor = do0 + <usize>i * rowQ;
    const L = load<f32>(lse + ((<usize>((b * H + h) * T + t)) << 2));
    const Di = load<f32>(Dt + (<usize>i << 2));
    dotRows(pj, qr, kj, rowKV, nv - j0, D, scale);
    dotRows(dj, dor, v0 + <usize>j0 * rowKV, rowKV, nv - j0, D, 1);
    if (softcap > 0) {
      for (let j = j0; j < nv; j++) {
        const o = <usize>j << 2;
        const th = Mathf.tanh(load<f32>(pi + o) / softcap);
        const p = Mathf.exp(softcap * th - L);
        store<f32>(pi + o, p);
        store<f32>(di + o, p * (load<f32>(di + o) - Di) * (1 - th * th)); // d softcap = 1 − tanh²
      }
    } else {
      for (let j = j0; j < nv; j++) {
        const o = <usize>j << 2;
        const p = Mathf.exp(load<f32>(pi + o) - L); // probabilities recomputed from the saved lse
        store<f32>(pi + o, p);
        store<f32>(di + o, p * (load<f32>(di + o) - Di));
      }
    }
    for (let j: i32 = 0; j < j0; j++) {
      store<f32>(pi + (<usize>j << 2), 0);
      store<f32>(di + (<usize>j << 2), 0);
    }
    for (let j = nv; j < ns; j++) {
      store<f32>(pi + (<usize>j << 2), 0);
      store<f32>(di + (<usize>j << 2), 0);
    }
    if (dq0 != 0) accumRows(dq0 + <usize>i * rowQ, dj, 4, kj, rowKV, nv - j0, D, 1);
  }
}

/**
 * dK += scale·dSᵀ·Q and dV += Pᵀ·dO for the keys [ja, jb) of a block formed by tileBlock (keys
 * [s0, s0 + ns), ja ≥ s0, jb ≤ s0 + ns): key j gets the tile rows [i0, i1) that see it (causal
 * start, window end, example end); the others hold zeros for it.
 */
@inline function keyAccum(dkb: usize, dvb: usize, P: usize, dS: usize, q0: usize, do0: usize, b: i32, T: i32, t0: i32, tq: i32, s0: i32, ja: i32, jb: i32,
  pos0: i32, window: i32, docStart: usize, scale: f32, rowQ: usize, rowKV: usize, D: i32): void {
  const rowP = <usize>KB << 2;
  const dsTile = docStart + (<usize>(b * T + t0) << 2); // docStart of the tile's rows (if any)
  let nd: i32 = 0; // tile rows whose example starts at or before the current key (a prefix)
  for (let key = ja; key < jb; key++) {
    const j = key - s0;
    const i0 = max(0, key - pos0 - t0);
    let i1 = window > 0 ? min(tq, key - pos0 + window - t0) : tq;
    if (docStart != 0) {
      while (nd < tq && load<i32>(dsTile + (<usize>nd << 2)) <= key) nd++;
      i1 = min(i1, nd);
    }
    if (i0 >= i1) continue;
    const o = <usize>j << 2;
    accumRows(dkb + <usize>key * rowKV, dS + <usize>i0 * rowP + o, rowP, q0 + <usize>i0 * rowQ, rowQ, i1 - i0, D, scale); // dK = scale·dSᵀ·Q
    accumRows(dvb + <usize>key * rowKV, P + <usize>i0 * rowP + o, rowP, do0 + <usize>i0 * rowQ, rowQ, i1 - i0, D, 1);
  }
}

/**
 * dq of one query tile (rows t0 .. t0 + TQ of head h; qh: byte offset of head h's query row 0):
 * zeroed, then dS·K over the tile's key blocks from its first key, then scaled. With withKeys, each
 * block's dK/dV contributions are accumulated too (the one-pass kernel); attention_backward_dq
 * runs the same blocks without them, so its dq has the same bits.
 */
@inline function queryTile(scratch: usize, dq: usize, dout: usize, q: usize, out: usize, kb: usize, vb: usize, lse: usize, dkb: usize, dvb: usize, withKeys: bool,
  b: i32, h: i32, H: i32, T: i32, S: i32, D: i32, t0: i32, pos0: i32, window: i32, docStart: usize, scale: f32, softcap: f32, qh: usize, rowQ: usize, rowKV: usize): void {
  const P = scratch, dS = scratch + (<usize>(TQ * KB) << 2), Dt = scratch + (<usize>(2 * TQ * KB) << 2);
  const tq = min(TQ, T - t0);
  const q0 = q + qh + <usize>t0 * rowQ, do0 = dout + qh + <usize>t0 * rowQ, dq0 = dq + qh + <usize>t0 * rowQ;
  for (let i: i32 = 0; i < tq; i++) zero(dq0 + <usize>i * rowQ, D);
  tileDi(Dt, do0, out + qh + <usize>t0 * rowQ, tq, rowQ, D);
  const nkTile = min(S, pos0 + t0 + tq); // keys seen by the tile's last query
  const firstTile = firstKey(docStart, b, T, t0, pos0, window); // first key seen by its first query
  for (let s0: i32 = firstTile; s0 < nkTile; s0 += KB) {
    const ns = min(KB, nkTile - s0);
    tileBlock(P, dS, Dt, q0, do0, dq0, kb, vb, lse, b, h, H, T, S, D, t0, tq, s0, ns, pos0, window, docStart, scale, softcap, rowQ, rowKV);
    if (withKeys) keyAccum(dkb, dvb, P, dS, q0, do0, b, T, t0, tq, s0, s0, s0 + ns, pos0, window, docStart, scale, rowQ, rowKV, D);
  }
  for (let i: i32 = 0; i < tq; i++) scaleTo(dq0 + <usize>i * rowQ, scale, dq0 + <usize>i * rowQ, D);
}

/** Dt[i] = dout_i·out_i for the tile's rows (Σ_s p·dp, the softmax backward's row term). */
@inline function tileDi(Dt: usize, do0: usize, o0: usize, tq: i32, rowQ: usize, D: i32): void {
  for (let i: i32 = 0; i < tq; i++) store<f32>(Dt + (<usize>i << 2), dot(do0 + <usize>i * rowQ, o0 + <usize>i * rowQ, D));
}

/**
 * dq overwritten; dk, dv overwritten (all kvStride rows of the group's kv head; each is the sum
 * over the group's query heads). scratch: this thread's area ((2·KB + 1)·TQ floats used).
 * Work range: (sequence, kv head) groups bg = b·KVH + g in [g0, g1) — a group owns its rows of
 * dk/dv and the dq rows of its query heads, so disjoint ranges never write the same memory.
 *
 * Flash-attention-2 shape: for a tile of TQ queries and a block of KB keys, P = exp(QKᵀ·scale − lse)
 * and dS = P ⊙ (dO·Vᵀ − Di) are formed in scratch (zero where the causal mask or the window hides
 * a key), then dQ += dS·K, dK += dSᵀ·Q·scale and dV += Pᵀ·dO run with the accumulated rows in
 * registers, so each dk/dv row is read and written once per query tile rather than once per query.
 * The key blocks start at the tile's first query's first key (window start, example start: both
 * never decrease along the tile), so hidden keys cost nothing; a key's rows of the tile that see
 * it are a range [i0, i1) (causal start; window and example end), and every row outside holds
 * zeros for it in P and dS, so the range only saves work. Keys no query sees (the padding rows
 * ≥ S) keep the zeros written first.
 *
 * When there are fewer groups than threads, the host runs the same arithmetic in two passes
 * instead (attention_backward_dq over query tiles, attention_backward_kv over key blocks), which
 * split finer and give the same bits.
 */
export function attention_backward(dq: usize, dk: usize, dv: usize, dout: usize, q: usize, k: usize, v: usize, out: usize, lse: usize, B: i32, T: i32, S: i32, H: i32, KVH: i32, D: i32, pos0: i32, kvStride: i32, scale: f32, softcap: f32, window: i32, docStart: usize, scratch: usize, g0: i32, g1: i32): void {
  const rep = H / KVH;
  // scratch (queryTile): P f32 [TQ][KB] probabilities of the tile × block, dS [TQ][KB] dp then ds,
  // Dt [TQ] dout·out of the tile's rows
  const rowKV = (<usize>KVH * <usize>D) << 2; // bytes from key s to s + 1
  const rowQ = (<usize>H * <usize>D) << 2; // bytes from query t to t + 1 (same head)
  for (let bg = g0; bg < g1; bg++) {
    const b = bg / KVH, g = bg % KVH;
    const base = (<usize>(b * kvStride * KVH + g) * <usize>D) << 2;
    const kb = k + base, vb = v + base, dkb = dk + base, dvb = dv + base;
    for (let s: i32 = 0; s < kvStride; s++) {
      zero(dkb + <usize>s * rowKV, D);
      zero(dvb + <usize>s * rowKV, D);
    }
    for (let h = g * rep; h < (g + 1) * rep; h++) {
      const qh = (<usize>((b * T) * H + h) * <usize>D) << 2; // byte offset of query row t = 0, head h
      for (let t0: i32 = 0; t0 < T; t0 += TQ) {
        queryTile(scratch, dq, dout, q, out, kb, vb, lse, dkb, dvb, true, b, h, H, T, S, D, t0, pos0, window, docStart, scale, softcap, qh, rowQ, rowKV);
      }
    }
  }
}

/**
 * The dq half of attention_backward (pos0 = 0, training shapes): dq overwritten. Work range:
 * query tiles u = (b·H + h)·⌈T/TQ⌉ + tile in [u0, u1). scratch as attention_backward's.
 */
export function attention_backward_dq(dq: usize, dout: usize, q: usize, k: usize, v: usize, out: usize, lse: usize, B: i32, T: i32, S: i32, H: i32, KVH: i32, D: i32, pos0: i32, kvStride: i32, scale: f32, softcap: f32, window: i32, docStart: usize, scratch: usize, u0: i32, u1: i32): void {
  const rep = H / KVH, tiles = (T + TQ - 1) / TQ;
  const rowKV = (<usize>KVH * <usize>D) << 2, rowQ = (<usize>H * <usize>D) << 2;
  for (let u = u0; u < u1; u++) {
    const bh = u / tiles, t0 = (u % tiles) * TQ, b = bh / H, h = bh % H, g = h / rep;
    const base = (<usize>(b * kvStride * KVH + g) * <usize>D) << 2;
    const qh = (<usize>((b * T) * H + h) * <usize>D) << 2;
    queryTile(scratch, dq, dout, q, out, k + base, v + base, lse, 0, 0, false, b, h, H, T, S, D, t0, pos0, window, docStart, scale, softcap, qh, rowQ, rowKV);
  }
}

/**
 * The dk, dv half of attention_backward: dk, dv overwritten. Work range: key blocks
 * u = (b·KVH + g)·⌈kvStride/KB⌉ + block in [u0, u1), keys [block·KB, block·KB + KB). Each tile's
 * P and dS are formed in the tile's own blocks (tileBlock: the same bits as the one-pass kernel),
 * those that overlap this unit's keys, and only its keys are accumulated.
 */
export function attention_backward_kv(dk: usize, dv: usize, dout: usize, q: usize, k: usize, v: usize, out: usize, lse: usize, B: i32, T: i32, S: i32, H: i32, KVH: i32, D: i32, pos0: i32, kvStride: i32, scale: f32, softcap: f32, window: i32, docStart: usize, scratch: usize, u0: i32, u1: i32): void {
  const rep = H / KVH, blocks = (kvStride + KB - 1) / KB;
  const P = scratch, dS = scratch + (<usize>(TQ * KB) << 2), Dt = scratch + (<usize>(2 * TQ * KB) << 2);
  const rowKV = (<usize>KVH * <usize>D) << 2, rowQ = (<usize>H * <usize>D) << 2;
  for (let u = u0; u < u1; u++) {
    const bg = u / blocks, ka = (u % blocks) * KB, kz = min(kvStride, ka + KB);
    const b = bg / KVH, g = bg % KVH;
    const base = (<usize>(b * kvStride * KVH + g) * <usize>D) << 2;
    const kb = k + base, vb = v + base, dkb = dk + base, dvb = dv + base;
    for (let s: i32 = ka; s < kz; s++) {
      zero(dkb + <usize>s * rowKV, D);
      zero(dvb + <usize>s * rowKV, D);
    }
    for (let h = g * rep; h < (g + 1) * rep; h++) {
      const qh = (<usize>((b * T) * H + h) * <usize>D) << 2;
      for (let t0: i32 = 0; t0 < T; t0 += TQ) {
        const tq = min(TQ, T - t0);
        const nkTile = min(S, pos0 + t0 + tq), firstTile = firstKey(docStart, b, T, t0, pos0, window);
        const lo = max(ka, firstTile), hi = min(kz, nkTile);
        if (lo >= hi) continue;
        const q0 = q + qh + <usize>t0 * rowQ, do0 = dout + qh + <usize>t0 * rowQ;
        tileDi(Dt, do0, out + qh + <usize>t0 * rowQ, tq, rowQ, D);
        for (let s0 = firstTile + ((lo - firstTile) / KB) * KB; s0 < hi; s0 += KB) {
          const ns = min(KB, nkTile - s0);
          tileBlock(P, dS, Dt, q0, do0, 0, kb, vb, lse, b, h, H, T, S, D, t0, tq, s0, ns, pos0, window, docStart, scale, softcap, rowQ, rowKV);
          keyAccum(dkb, dvb, P, dS, q0, do0, b, T, t0, tq, s0, max(s0, lo), min(s0 + ns, hi), pos0, window, docStart, scale, rowQ, rowKV, D);
        }
      }
    }
  }
}
