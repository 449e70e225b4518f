// An operand x that may alias the output o (the Backend contract allows it for elementwise
// kernels): with IN_PLACE the pipeline reads x from o. The including file declares o, x and the
// Params fields o_off and x_off.

override IN_PLACE: bool = false;

fn x_at(i: u32) -> f32 {
  if (IN_PLACE) {
    return o[P.o_off + i];
  }
  return x[P.x_off + i];
}
