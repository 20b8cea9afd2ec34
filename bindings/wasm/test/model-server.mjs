// Model files served over HTTP on 127.0.0.1 for the streaming tests (Node
// and browser): each file is served as a real server would (Content-Length,
// ETag, in chunks), or misbehaves on purpose: a 404, a connection closed
// half-way, a Content-Length shorter than the file, a server that stops
// sending, a slow one. Every request is counted.
import { createServer } from 'node:http';

/**
 * A handler for the paths under `/models/`. `put(path, bytes, options)`
 * serves `bytes` at `/models/${path}`; options: `{ mode: 'ok' | 'truncate'
 * | 'short-length' | 'stall' | 'slow', chunk, delayMs }`.
 */
export function models() {
  const files = new Map();
  const requests = [];
  const open = new Set();
  const handle = async (req, res, path) => {
    requests.push(path);
    const file = files.get(path);
    if (file === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    const { bytes, mode = 'ok', chunk = 64 << 10, delayMs = 0 } = file;
    const etag = `"${bytes.length}-${file.version}"`;
    if (req.headers['if-none-match'] === etag) {
      res.writeHead(304, { etag, 'cache-control': 'no-store' }).end();
      return;
    }
    const sent = mode === 'short-length' ? bytes.subarray(0, bytes.length - 100) : bytes;
    res.writeHead(200, {
      'content-type': path.endsWith('.json') ? 'application/json' : 'application/octet-stream',
      'content-length': String(sent.length),
      etag,
      'cache-control': 'no-store',
    });
    open.add(res);
    res.on('close', () => open.delete(res));
    const stopAt = mode === 'truncate' ? sent.length >> 1 : mode === 'stall' ? 1024 : sent.length;
    for (let at = 0; at < stopAt && !res.destroyed; at += chunk) {
      const ok = res.write(sent.subarray(at, Math.min(at + chunk, stopAt)));
      if (!ok) {
        await new Promise((resolve) => {
          const done = () => {
            res.off('drain', done).off('close', done);
            resolve();
          };
          res.on('drain', done).on('close', done);
        });
      }
      if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
    if (res.destroyed) return;
    if (mode === 'truncate') res.socket.destroy(); // the connection drops half-way
    else if (mode === 'stall') return; // headers and 1 KiB, then nothing: left open
    else res.end();
  };
  let version = 0;
  return {
    handle,
    /** Every path requested so far (a copy). */
    get requests() {
      return [...requests];
    },
    put(path, bytes, options = {}) {
      files.set(path, { bytes, version: ++version, ...options });
    },
    /** Close the responses still open (a stalled one). */
    closeAll() {
      for (const res of open) res.destroy();
    },
  };
}

/** A server of `registry` alone (the Node tests): `{ url, close() }`. */
export function serveModels(registry) {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://localhost').pathname);
    if (!path.startsWith('/models/')) return void res.writeHead(404).end();
    registry.handle(req, res, path.slice('/models/'.length));
  });
  return listen(server, () => registry.closeAll());
}

export function listen(server, beforeClose = () => {}) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({
        url: `http://127.0.0.1:${port}/`,
        close: () =>
          new Promise((done) => {
            beforeClose();
            server.closeAllConnections?.();
            server.close(done);
          }),
      });
    });
  });
}
