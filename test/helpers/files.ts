// Files a test suite opens and closes after the suite (the loaders leave their source open).
import { FileSource } from '../../src/io/node.ts';

export function fileOpener(suite: { after: (fn: () => Promise<void>) => void }): (path: string) => Promise<FileSource> {
  const opened: FileSource[] = [];
  suite.after(async () => { for (const f of opened.splice(0)) await f.close(); });
  return async (path: string) => {
    const f = await FileSource.open(path);
    opened.push(f);
    return f;
  };
}
