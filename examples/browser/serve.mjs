#!/usr/bin/env node
// A tiny static file server for the browser demo and the browser test: serves the repository
// root (so the page can import ../../dist/browser/webqlora.js and fetch ../../assets/*.gguf).
//
//   node examples/browser/serve.mjs [--port 8080] [--host 127.0.0.1]
//   then open http://127.0.0.1:8080/examples/browser/
//
// Every response carries the two cross-origin-isolation headers
//   Cross-Origin-Opener-Policy: same-origin
//   Cross-Origin-Embedder-Policy: require-corp
// With both, the page is `crossOriginIsolated`, which browsers require before they hand out
// SharedArrayBuffer (and so shared WebAssembly.Memory for multithreaded WASM kernels). Because
// of require-corp, every subresource must be same-origin (or send CORP/CORS headers): this
// server also sends `Cross-Origin-Resource-Policy: same-origin` on everything it serves.
//
// WebGPU needs a secure context: http://127.0.0.1 and http://localhost count as secure, other
// hosts need https. Only files under the root are served; nothing is listed or written.
import { createServer } from 'node:http';
import { createReadStream, statSync } from 'node:fs';
import { extname, join, normalize, resolve, sep, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export const MIME_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.jsonl': 'application/jsonl; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.wasm': 'application/wasm',
  '.wgsl': 'text/wgsl; charset=utf-8',
  '.gguf': 'application/octet-stream',
  '.bin': 'application/octet-stream',
  '.safetensors': 'application/octet-stream',
  '.model': 'application/octet-stream',
};

export const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

/**
 * Starts the server. Resolves once it listens; `port` 0 picks a free port (read it from the
 * result). `close()` stops it.
 */
export function startServer({ root = REPO_ROOT, port = 8080, host = '127.0.0.1', log = null } = {}) {
  const base = resolve(root);
  const server = createServer((req, res) => {
    const send = (status, headers, body) => {
      res.writeHead(status, { ...ISOLATION_HEADERS, 'Cache-Control': 'no-store', ...headers });
      res.end(body);
      log?.(`${status} ${req.method} ${req.url}`);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, { Allow: 'GET, HEAD' }, 'method not allowed\n');
    let path;
    try {
      path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    } catch {
      return send(400, {}, 'bad request\n');
    }
    let file = normalize(join(base, path));
    if (file !== base && !file.startsWith(base + sep)) return send(403, {}, 'forbidden\n');
    // no dotfiles (.git, .env): this serves a working copy
    if (path.split('/').some((seg) => seg.startsWith('.'))) return send(404, { 'Content-Type': 'text/plain; charset=utf-8' }, `not found: ${path}\n`);
    let st;
    try {
      st = statSync(file);
      if (st.isDirectory()) {
        if (!path.endsWith('/')) return send(301, { Location: path + '/' }, '');
        file = join(file, 'index.html');
        st = statSync(file);
      }
    } catch {
      return send(404, { 'Content-Type': 'text/plain; charset=utf-8' }, `not found: ${path}\n`);
    }
    const type = MIME_TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream';
    res.writeHead(200, { ...ISOLATION_HEADERS, 'Cache-Control': 'no-store', 'Content-Type': type, 'Content-Length': st.size });
    log?.(`200 ${req.method} ${req.url}`);
    if (req.method === 'HEAD') return res.end();
    createReadStream(file).on('error', () => res.destroy()).pipe(res);
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => {
      server.off('error', fail);
      const addr = server.address();
      ok({
        port: addr.port,
        url: `http://${host}:${addr.port}/`,
        close: () => new Promise((done) => { server.closeAllConnections?.(); server.close(() => done()); }),
      });
    });
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const arg = (name, dflt) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : dflt;
  };
  const port = Number(arg('port', '8080'));
  const host = arg('host', '127.0.0.1');
  const s = await startServer({ port, host, log: process.argv.includes('--quiet') ? null : (l) => console.log(l) });
  console.log(`serving ${REPO_ROOT} (cross-origin isolated)\nopen ${s.url}examples/browser/`);
}
