// A tiny static file server for the browser test: serves the package folder
// (bindings/wasm) on 127.0.0.1, on a port the OS picks.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

import { listen } from '../model-server.mjs';

const root = fileURLToPath(new URL('../../', import.meta.url));

const types = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.map': 'application/json',
};

/** Start the server; resolves to `{ url, close() }`. Paths under
 * `/models/` are `registry`'s (test/model-server.mjs), when given. */
export function serve(registry) {
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://localhost').pathname);
    if (registry && path === '/__requests') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(registry.requests));
      return;
    }
    if (registry && path.startsWith('/models/')) {
      registry.handle(req, res, path.slice('/models/'.length));
      return;
    }
    const file = normalize(join(root, path));
    if (!file.startsWith(root) || file.split(sep).includes('node_modules')) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, {
        'content-type': types[extname(file)] ?? 'application/octet-stream',
        'cache-control': 'no-store',
      });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return listen(server, () => registry?.closeAll());
}
