// Types of train-case.js for the Node side of the browser test.
import type * as Webqlora from '../../src/index.ts';

export interface CaseOptions {
  steps?: number;
  batchSize?: number;
  seqLen?: number;
  lr?: number;
  seed?: number;
  /** demo stories generated as training data */
  stories?: number;
  /** greedy tokens to generate after training (0: none) */
  generate?: number;
  /** DoRA adapters (useDora) and sample packing of the stories */
  dora?: boolean;
  packing?: boolean;
}

export interface CaseResult {
  backend: string;
  /** per optimizer step: forward loss before the update, global gradient norm, seconds */
  losses: number[];
  gradNorms: number[];
  stepSeconds: number[];
  loadSeconds: number;
  /** FNV-1a of the final adapter_model.safetensors */
  adapterFnv: string;
  adapterConfig: string;
  /** final adapter values, float32, tensors in sorted PEFT key order */
  adapterValues: number[];
  /** greedy ids after "Once upon a time" with the trained adapter (options.generate of them) */
  generated: number[];
}

export declare const CASE_DEFAULTS: Required<CaseOptions>;
export declare function fnv1a(bytes: Uint8Array): string;
export declare function trainCase(lib: typeof Webqlora, backend: Webqlora.Backend, modelBytes: Uint8Array, options?: CaseOptions): Promise<CaseResult>;
