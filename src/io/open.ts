// Format detection for model inputs: one entry point for every loader, the same in Node and in
// browsers (Node adds path handling in io/node.ts: openModelPath).
import { WebqloraError } from '../errors.ts';
import { openGguf } from './gguf.ts';
import { openHfDir } from './hf.ts';
import { openLlama2c } from './llama2c.ts';
import type { ByteSource, DirSource } from './source.ts';
import type { WeightSource } from './weights.ts';

export const SUPPORTED_MODEL_FORMATS =
  'a Hugging Face model directory (config.json + *.safetensors, float or bnb 4-bit), a .gguf file, or a llama2.c .bin file';

function isDir(s: ByteSource | DirSource): s is DirSource {
  return typeof (s as DirSource).list === 'function';
}

/**
 * Opens a model from a directory (HF layout) or a single file (GGUF by magic or extension,
 * llama2.c by extension). The caller keeps ownership of `src` (close it after the WeightSource).
 */
export async function openModel(src: ByteSource | DirSource): Promise<WeightSource> {
  if (isDir(src)) {
    if (!(await src.open('config.json'))) {
      throw new WebqloraError(`${src.name}: no config.json, so this is not a Hugging Face model directory (expected ${SUPPORTED_MODEL_FORMATS}).`);
    }
    return openHfDir(src);
  }
  const lower = src.name.toLowerCase();
  const magic = src.size >= 4 ? await src.read(0, 4) : new Uint8Array(0);
  // "GGUF" at offset 0 (gguf docs: magic), whatever the extension.
  if (lower.endsWith('.gguf') || (magic.length === 4 && magic[0] === 0x47 && magic[1] === 0x47 && magic[2] === 0x55 && magic[3] === 0x46)) {
    return openGguf(src);
  }
  if (lower.endsWith('.bin')) return openLlama2c(src);
  if (lower.endsWith('.safetensors')) {
    throw new WebqloraError(`${src.name}: a bare .safetensors file has no model config; pass the directory that holds it and its config.json.`);
  }
  throw new WebqloraError(`${src.name}: unknown model format (expected ${SUPPORTED_MODEL_FORMATS}).`);
}
