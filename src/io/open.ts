// Format detection for model inputs: one entry point for every loader, the same in Node and in
// browsers (Node adds path handling in io/node.ts: openModelPath).
import { WebqloraError } from '../errors.ts';
import { GGUF_MAGIC, openGguf } from './gguf.ts';
import { openHfDir } from './hf.ts';
import { openLlama2c } from './llama2c.ts';
import { closeSource, type ByteSource, type DirSource } from './source.ts';
import type { WeightSource } from './weights.ts';

const SUPPORTED_MODEL_FORMATS =
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
    // Only a test for existence: openHfDir opens config.json itself, so this handle is closed at once.
    const cfg = await src.open('config.json');
    if (!cfg) {
      throw new WebqloraError(`${src.name}: no config.json, so this is not a Hugging Face model directory (expected ${SUPPORTED_MODEL_FORMATS}).`);
    }
    await closeSource(cfg);
    return openHfDir(src);
  }
  const lower = src.name.toLowerCase();
  const magic = src.size >= 4 ? await src.read(0, 4) : null;
  // "GGUF" at offset 0 (gguf docs: magic), whatever the extension.
  if (lower.endsWith('.gguf') || (magic && new DataView(magic.buffer, magic.byteOffset, 4).getUint32(0, true) === GGUF_MAGIC)) {
    return openGguf(src);
  }
  if (lower.endsWith('.bin')) return openLlama2c(src);
  if (lower.endsWith('.safetensors')) {
    throw new WebqloraError(`${src.name}: a bare .safetensors file has no model config; pass the directory that holds it and its config.json.`);
  }
  throw new WebqloraError(`${src.name}: unknown model format (expected ${SUPPORTED_MODEL_FORMATS}).`);
}
