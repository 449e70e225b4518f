// webqlora public API, identical in Node and browsers. Node-only helpers (file paths, Dawn) are
// added by src/node.ts.
export { WebqloraError } from './errors.ts';
export * from './io/source.ts';
export * from './io/dtype.ts';
export * from './quant/types.ts';
export { quantize4bit, dequantize4bit, doubleQuantize, effectiveAbsmax, quantizeBlockwise8, dequantizeBlockwise8 } from './quant/quantize.ts';
export * from './model/config.ts';
export type * from './io/weights.ts';
export { VERSION } from './version.ts';
