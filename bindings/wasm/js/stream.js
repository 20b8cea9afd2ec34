// Streamed sources: a URL, a Request, a Response, a ReadableStream, a Blob
// or File, a model folder at a base URL, or a files object holding any of
// these. Each file's bytes are handed to the wasm stream chunk by chunk as
// they arrive, and copied from there straight into their tensors: no file
// is ever held whole in JS or copied twice in wasm memory.
import { ModelManagerError, ErrorCode } from './errors.js';

const CACHE_NAME = 'model-manager-v1';
/** Default for `stallTimeout`: a download that sends nothing this long fails. */
export const DEFAULT_STALL_TIMEOUT = 30_000;

const has = (name) => typeof globalThis[name] === 'function';
const isA = (value, name) => has(name) && value instanceof globalThis[name];

/**
 * A streamed load's progress: the files' bytes (downloaded against their
 * lengths, when every length is known; at the end, what arrived), and the
 * core's tensors and current file (`core`: the load's raw progress).
 */
export function streamProgress(files, core, final) {
  const totals = files.map((f) => f.bytesTotal);
  const progress = {
    bytesDone: files.reduce((sum, f) => sum + f.bytesDone, 0),
    bytesTotal: totals.includes(null) ? null : totals.reduce((a, b) => a + b, 0),
    tensorsDone: core.tensorsDone,
    tensorsTotal: core.tensorsTotal,
    file: core.file,
    files: files.map((f) => ({ ...f })),
  };
  if (final) progress.bytesTotal = progress.bytesDone;
  return progress;
}

/** One streamed file's origin: a URL, a Request, a Response, a stream, a Blob. */
/** A chunk a stream yielded, as bytes: a Uint8Array, any other view, an
 * ArrayBuffer; anything else fails the load with code 1. */
function chunkBytes(chunk) {
  if (chunk instanceof Uint8Array) return chunk;
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  const tag = Object.prototype.toString.call(chunk);
  if (tag === '[object ArrayBuffer]' || tag === '[object SharedArrayBuffer]') return new Uint8Array(chunk);
  throw new ModelManagerError(
    `invalid argument: a stream yielded ${tag.slice(8, -1)}, not bytes (a Uint8Array or an ArrayBuffer)`,
    ErrorCode.InvalidArgument,
  );
}

function isStreamy(value) {
  return (
    typeof value === 'string' ||
    value instanceof URL ||
    isA(value, 'Request') ||
    isA(value, 'Response') ||
    isA(value, 'ReadableStream') ||
    isA(value, 'Blob')
  );
}

/** `{ baseUrl, files }`: a model folder on a server. */
function isFolder(value) {
  return (
    value !== null &&
    typeof value === 'object' &&
    Array.isArray(value.files) &&
    (typeof value.baseUrl === 'string' || value.baseUrl instanceof URL)
  );
}

/** Whether `load` streams this source (else it is bytes in memory). */
export function isStreamSource(source) {
  if (isStreamy(source) || isFolder(source)) return true;
  if (source === null || typeof source !== 'object' || ArrayBuffer.isView(source)) return false;
  const values = source instanceof Map ? [...source.values()] : Object.values(source);
  return values.some((v) => typeof v !== 'string' && isStreamy(v));
}

function invalid(message) {
  return new ModelManagerError(`invalid argument: ${message}`, ErrorCode.InvalidArgument);
}

/** The name a single weights file gets (`.safetensors` tells weights apart). */
function weightsName(hint) {
  const last = String(hint ?? '').split(/[?#]/)[0].split('/').pop();
  return last && last.endsWith('.safetensors') ? last : 'model.safetensors';
}

/** The list of files to stream: `[{ name, origin }]`. */
export function streamFiles(source) {
  if (isFolder(source)) {
    const base = new URL(String(source.baseUrl), globalThis.location?.href);
    if (!base.pathname.endsWith('/')) base.pathname += '/';
    if (source.files.length === 0) throw invalid('a model folder needs at least one file');
    return source.files.map((name) => {
      if (typeof name !== 'string') throw invalid('folder file names must be strings');
      return { name, origin: new URL(name, base).href };
    });
  }
  if (typeof source === 'string' || source instanceof URL) {
    const url = new URL(String(source), globalThis.location?.href).href;
    return [{ name: weightsName(new URL(url).pathname), origin: url }];
  }
  if (isA(source, 'Request') || isA(source, 'Response')) {
    return [{ name: weightsName(new URL(source.url || 'x:/', 'x:/').pathname), origin: source }];
  }
  if (isA(source, 'Blob')) return [{ name: weightsName(source.name), origin: source }];
  if (isA(source, 'ReadableStream')) return [{ name: 'model.safetensors', origin: source }];
  const entries = source instanceof Map ? [...source.entries()] : Object.entries(source);
  return entries.map(([name, origin]) => {
    if (typeof name !== 'string') throw invalid('file names must be strings');
    if (typeof origin === 'string') origin = new TextEncoder().encode(origin);
    else if (origin instanceof URL) origin = origin.href;
    else if (origin instanceof ArrayBuffer) origin = new Uint8Array(origin);
    else if (ArrayBuffer.isView(origin)) {
      origin = new Uint8Array(origin.buffer, origin.byteOffset, origin.byteLength);
    } else if (!isStreamy(origin)) {
      throw invalid(`file ${JSON.stringify(name)} must be bytes, a URL, a Request, a Response, a Blob or a ReadableStream`);
    }
    return { name, origin };
  });
}

/** `Content-Length`, when it is the length of the bytes the body yields. */
function lengthOf(response) {
  if (response.headers.get('content-encoding')) return null;
  const value = response.headers.get('content-length');
  if (value === null || !/^\d+$/.test(value.trim())) return null;
  return Number(value);
}

async function openCache() {
  if (!has('caches') && !(globalThis.caches && typeof globalThis.caches.open === 'function')) {
    throw invalid('the Cache API is not available here (caching needs a browser or a worker, in a secure context)');
  }
  return globalThis.caches.open(CACHE_NAME);
}

/**
 * After a load failed because a file is not what it should be (code 8 or
 * 9): drop the files it read from the cache or stored there (once each
 * store has settled), so that the next load downloads them again.
 */
export async function forgetCached({ urls, stores }) {
  if (urls.size === 0) return;
  await Promise.allSettled(stores);
  const c = await openCache();
  await Promise.allSettled([...urls].map((url) => c.delete(url)));
}

/** Delete every file `load(…, { cache: true })` kept. */
export async function clearCache() {
  if (!globalThis.caches) return false;
  return globalThis.caches.delete(CACHE_NAME);
}

function httpError(url, response) {
  const error = new ModelManagerError(
    `${url}: the server answered ${response.status} ${response.statusText}`.trim(),
    response.status === 404 || response.status === 410 ? ErrorCode.MissingFile : ErrorCode.Io,
  );
  error.url = url;
  return error;
}

/**
 * Open one file: `{ body, bytes, length, url, cached, store, feed }`.
 * When caching a download, `feed` takes the chunks the load reads (the
 * cache is fed from them: the body is read once, when its turn comes, never
 * buffered whole beside the load), and `store` resolves once the cache
 * holds the whole file (it rejects, storing nothing, if the download stops
 * short).
 */
async function open(file, { signal, cache, fetch: fetchFn }) {
  const { origin } = file;
  if (origin instanceof Uint8Array) return { bytes: origin, length: origin.byteLength, url: file.name };
  if (isA(origin, 'Blob')) return { body: origin.stream(), length: origin.size, url: file.name };
  if (isA(origin, 'ReadableStream')) return { body: origin, length: null, url: file.name };
  let response;
  let url;
  if (isA(origin, 'Response')) {
    response = origin;
    url = origin.url || file.name;
  } else {
    const request = isA(origin, 'Request') ? origin : null;
    url = request ? request.url : origin;
    let hit = null;
    if (cache) {
      hit = await (await openCache()).match(url);
      const etag = hit?.headers.get('etag');
      if (hit && hit.body && (cache !== 'revalidate' || !etag)) {
        return { body: hit.body, length: lengthOf(hit), url, cached: true };
      }
    }
    try {
      if (hit && hit.body) {
        // Revalidate: a 304 means the cached file is current.
        const headers = new Headers(request?.headers);
        headers.set('if-none-match', hit.headers.get('etag'));
        response = await fetchFn(request ? new Request(request, { headers }) : url, { signal, headers });
        if (response.status === 304) {
          return { body: hit.body, length: lengthOf(hit), url, cached: true };
        }
        hit.body.cancel().catch(() => {});
      } else {
        response = await fetchFn(request ?? url, { signal });
      }
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw new ModelManagerError(`${url}: the download failed: ${error?.message ?? error}`, ErrorCode.Io, {
        cause: error,
      });
    }
  }
  if (!response.ok) throw httpError(url, response);
  if (response.body === null) return { bytes: new Uint8Array(0), length: 0, url };
  const length = lengthOf(response);
  const body = response.body;
  let store;
  let feed;
  if (cache && !isA(origin, 'Response')) {
    let controller;
    const cached = new ReadableStream({
      start(c) {
        controller = c;
      },
    });
    // A cache that gave up (quota, an error) stops taking chunks; the
    // load goes on regardless.
    const quietly = (f) => {
      try {
        f();
      } catch {
        // the cache's stream is already closed or errored
      }
    };
    feed = {
      push: (chunk) => quietly(() => controller.enqueue(chunk)),
      close: () => quietly(() => controller.close()),
      fail: (reason) => quietly(() => controller.error(reason)),
    };
    const headers = new Headers();
    if (length !== null) headers.set('content-length', String(length));
    for (const name of ['etag', 'last-modified', 'content-type']) {
      const value = response.headers.get(name);
      if (value !== null) headers.set(name, value);
    }
    store = openCache().then((c) => c.put(url, new Response(cached, { headers })));
    store.catch(() => {});
  }
  return { body, length, url, store, feed };
}

/** `promise`, or a Timeout error after `ms` milliseconds without it settling. */
function stallGuard(promise, ms, what) {
  if (!(ms > 0) || ms === Infinity) return promise;
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new ModelManagerError(`${what}: no data for ${ms} ms (stallTimeout)`, ErrorCode.Timeout)),
      ms,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Stream `files` into the wasm stream `writer`. Resolves once every file is
 * in; on a download error, fails the load with it (`writer.abort`) and
 * resolves to that error; stops quietly when the load ends first.
 *
 * `progress(files)` is called after every chunk with the per-file counts.
 */
export async function pump(writer, files, { signal, cache, stallTimeout, fetch: fetchFn, progress, failed, cached }) {
  const state = files.map((f) => ({ name: f.name, url: null, bytesDone: 0, bytesTotal: null, cached: false }));
  // Every request starts now (the server sends headers, and lengths, early);
  // bodies are read one file at a time, in order.
  let early = null; // a later file's request failed (a 404): fail now
  let reader = null;
  const opened = files.map((file, j) => {
    const p = open(file, { signal, cache, fetch: fetchFn });
    p.then(
      (f) => {
        if (state[j].bytesTotal === null) state[j].bytesTotal = f.length;
      },
      (error) => {
        if (early === null && !signal.aborted) {
          early = error;
          reader?.cancel(error).catch(() => {});
        }
      },
    );
    return p;
  });
  const write = async (chunk, s, feed) => {
    let view = chunkBytes(chunk);
    // The cache gets the very bytes the load takes (no second copy).
    feed?.push(view);
    while (view.byteLength > 0) {
      const n = writer.write(view);
      if (n === 0) {
        await writer.writable();
        continue;
      }
      view = view.subarray(n);
      s.bytesDone += n;
    }
  };
  let current = null;
  // A stream or Blob the load stopped reading is cancelled at once.
  const stop = () => reader?.cancel(signal.reason).catch(() => {});
  signal.addEventListener('abort', stop, { once: true });
  try {
    for (let i = 0; i < files.length; i++) {
      const s = state[i];
      const file = await stallGuard(opened[i], stallTimeout, files[i].name);
      current = file;
      s.url = file.url;
      s.bytesTotal = file.length;
      s.cached = !!file.cached;
      if (file.cached || file.store) {
        cached.urls.add(file.url);
        if (file.store) cached.stores.push(file.store);
      }
      await writer.writable();
      writer.begin(files[i].name, file.length ?? undefined);
      if (file.bytes) {
        await write(file.bytes, s);
        progress(state);
      } else {
        reader = file.body.getReader();
        let whole = false;
        try {
          for (;;) {
            const { done, value } = await stallGuard(reader.read(), stallTimeout, file.url);
            if (early !== null) throw early;
            if (done) break;
            await write(value, s, file.feed);
            progress(state);
          }
          whole = true;
          file.feed?.close();
        } finally {
          // Cancels the download when the load stopped first; a cache fed
          // from it stores nothing.
          if (!whole) file.feed?.fail(new Error('the download stopped short'));
          reader.cancel().catch(() => {});
          reader = null;
        }
      }
      if (early !== null) throw early;
      writer.end();
      if (file.store) {
        await file.store.catch(() => {});
      }
    }
    await writer.writable();
    writer.finish();
    return null;
  } catch (error) {
    if (signal.aborted || writer.isClosed) return null; // the load ended first
    const failure =
      error instanceof ModelManagerError
        ? error
        : typeof error?.code === 'number'
          ? new ModelManagerError(error.message, error.code)
          : new ModelManagerError(
            `${current?.url ?? 'the download'}: the download failed: ${error?.message ?? error}`,
            ErrorCode.Io,
            { cause: error },
          );
    failed(failure);
    writer.abort(failure.code, failure.url ?? current?.url ?? '', failure.message);
    return failure;
  } finally {
    signal.removeEventListener('abort', stop);
    // Files the load never reached store nothing (a feed left open would
    // keep their cache writes pending for good).
    for (const p of opened) {
      p.then((f) => f.feed?.fail(new Error('the load did not read this file')), () => {});
    }
  }
}
