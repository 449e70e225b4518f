// Central finite differences of a scalar loss against an analytic gradient, on the float64
// reference backend: the parameter is perturbed in place (no float32 rounding of write()).
import * as assert from 'uvu/assert';
import type { Tensor } from '../../src/backend/backend.ts';
import type { ReferenceBackend } from '../../src/backend/reference/index.ts';
import type { Rng } from './index.ts';

export interface FdOptions {
  /** draws the probed elements: `probes` times rng.int(param.length) */
  rng: Rng;
  /** elements of `param` probed */
  probes: number;
  /** largest relative error |fd − g| / max(1e-4, |fd|) accepted */
  tol: number;
  /** step of the central difference (default 1e-6) */
  eps?: number;
}

/**
 * Compares `grad` (the analytic gradient of `loss` w.r.t. `param`, already computed) with
 * (loss(w + eps) − loss(w − eps)) / 2eps at `probes` random elements of `param`, restoring each
 * element after probing; fails naming the element. `be` must be an f64 reference backend.
 * Returns the number of elements checked and the worst relative error.
 */
export async function fdCheck(be: ReferenceBackend, param: Tensor, grad: Tensor, loss: () => Promise<number>, opts: FdOptions): Promise<{ checked: number; worst: number }> {
  const eps = opts.eps ?? 1e-6;
  await be.flush();
  const g = Float64Array.from(be.peekF(grad));
  const live = be.peekF(param); // the f64 array itself: perturb without rounding
  assert.instance(live, Float64Array, 'finite differences need the float64 reference backend');
  let checked = 0, worst = 0;
  for (let k = 0; k < opts.probes; k++) {
    const i = opts.rng.int(live.length), orig = live[i]!;
    live[i] = orig + eps;
    const lp = await loss();
    live[i] = orig - eps;
    const lm = await loss();
    live[i] = orig;
    const fd = (lp - lm) / (2 * eps);
    const err = Math.abs(fd - g[i]!) / Math.max(1e-4, Math.abs(fd));
    worst = Math.max(worst, err);
    assert.ok(err < opts.tol, `${param.label}[${i}]: analytic ${g[i]} vs finite difference ${fd} (rel err ${err})`);
    checked++;
  }
  return { checked, worst };
}
