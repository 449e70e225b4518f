// Model paths (the CLI's --model, openModelPath of the Node entry point): a directory, a file, or
// synthetic:NAME, opened through node.ts's file sources (Node-only, as every io/node*.ts file).
import { stat } from 'node:fs/promises';
import { WebqloraError } from '../errors.ts';
import { isSynthetic, syntheticSource } from '../model/synthetic.ts';
import { FileSource, fsReason, NodeDirSource } from './node.ts';
import { openModel } from './open.ts';
import type { WeightSource } from './weights.ts';

/**
 * Opens a model by path: an HF directory, a .gguf or a llama2.c .bin file, or synthetic:NAME. The returned
 * source's close() also closes the files opened here.
 */
export async function openModelPath(path: string): Promise<WeightSource> {
  if (isSynthetic(path)) return syntheticSource(path);
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    throw new WebqloraError(`${path}: ${fsReason(e)}.`);
  }
  const handle: NodeDirSource | FileSource = st.isDirectory() ? new NodeDirSource(path) : await FileSource.open(path);
  let ws: WeightSource;
  try {
    ws = await openModel(handle);
  } catch (e) {
    await handle.close().catch(() => {});
    throw e;
  }
  // Own property shadowing the loader's close(); keeps the loader's object (and its extras).
  const inner = ws.close.bind(ws);
  ws.close = async () => {
    try { await inner(); } finally { await handle.close(); }
  };
  return ws;
}
