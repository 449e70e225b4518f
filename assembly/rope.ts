// Rotate-half RoPE (Llama/HF layout): for i < D/2 the pair (x_i, x_{i+D/2}) is rotated by the
// angle of (position, i): (x_i·cos − x_{i+D/2}·sin, x_{i+D/2}·cos + x_i·sin).
// Backend.rope ↔ rope; Backend.ropeBackward ↔ rope_backward (the inverse rotation = transpose).
// x f32 [R, nh, D] in place; row r is position pos0 + (r mod T), or with packed sequences
// (docStart ≠ 0: i32 [R], the row of each row's example start) pos0 + (r mod T) − docStart[r];
// cos, sin f32 [maxPos, D/2]. Work range: rows [r0, r1).

@inline function rotate(x: usize, cos: usize, sin: usize, R: i32, T: i32, nh: i32, D: i32, pos0: i32, docStart: usize, sign: f32, r0: i32, r1: i32): void {
  const half = D >> 1;
  const sv = f32x4.splat(sign);
  for (let r = r0; r < r1; r++) {
    let pos = pos0 + r % T;
    if (docStart != 0) pos -= load<i32>(docStart + (<usize>r << 2));
    const ct = cos + ((<usize>pos * <usize>half) << 2);
    const st = sin + ((<usize>pos * <usize>half) << 2);
    for (let h: i32 = 0; h < nh; h++) {
      const a = x + ((<usize>(r * nh + h) * <usize>D) << 2);
      const b = a + (<usize>half << 2);
      let i: i32 = 0;
      for (; i + 4 <= half; i += 4) {
        const o = <usize>i << 2;
        const c = v128.load(ct + o), s = f32x4.mul(v128.load(st + o), sv);
        const xa = v128.load(a + o), xb = v128.load(b + o);
        v128.store(a + o, f32x4.sub(f32x4.mul(xa, c), f32x4.mul(xb, s)));
        v128.store(b + o, f32x4.add(f32x4.mul(xb, c), f32x4.mul(xa, s)));
      }
      for (; i < half; i++) {
        const o = <usize>i << 2;
        const c = load<f32>(ct + o), s = load<f32>(st + o) * sign;
        const xa = load<f32>(a + o), xb = load<f32>(b + o);
        store<f32>(a + o, xa * c - xb * s);
        store<f32>(b + o, xb * c + xa * s);
      }
    }
  }
}

export function rope(x: usize, cos: usize, sin: usize, R: i32, T: i32, nh: i32, D: i32, pos0: i32, docStart: usize, r0: i32, r1: i32): void {
  rotate(x, cos, sin, R, T, nh, D, pos0, docStart, 1, r0, r1);
}

/** d(unrotated) from d(rotated): the same rotation by −angle (sin negated; exact in f32). */
export function rope_backward(dx: usize, cos: usize, sin: usize, R: i32, T: i32, nh: i32, D: i32, pos0: i32, docStart: usize, r0: i32, r1: i32): void {
  rotate(dx, cos, sin, R, T, nh, D, pos0, docStart, -1, r0, r1);
}
