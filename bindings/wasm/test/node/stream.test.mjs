// Streamed sources under Node: URLs, Requests, Responses, ReadableStreams,
// Blobs and model folders served by a local HTTP server on 127.0.0.1 (one
// per test file), including servers that fail in each way a download can.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { ModelManager, ModelManagerError, ErrorCode } from 'model-manager-wasm';
import { f32Model, diffusersPipeline, shardedFolder, ramp } from '../fixtures.js';
import { models, serveModels } from '../model-server.mjs';

const registry = models();
let server;
before(async () => {
  server = await serveModels(registry);
});
after(() => server.close());

const url = (path) => `${server.url}models/${path}`;

async function rejectsWith(promise, code) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof ModelManagerError, `not a ModelManagerError: ${error}`);
    assert.equal(error.code, code, `code ${error.code} (${error.message}), expected ${code}`);
    return true;
  });
}

/** Each progress field that is a number never decreases. */
function monotonic(reports) {
  for (let i = 1; i < reports.length; i++) {
    for (const k of ['bytesDone', 'tensorsDone']) {
      assert.ok(reports[i][k] >= reports[i - 1][k], `${k} went back at report ${i}`);
    }
  }
}

function checkRamp(manager, name, n, seed) {
  const lease = manager.acquire();
  try {
    const { data } = lease.tensor(name);
    assert.equal(data.length, n);
    assert.equal(data[0], seed);
    assert.equal(data[n - 1], seed + n - 1);
  } finally {
    lease.release();
  }
}

test('a URL streams into the model with download progress', async () => {
  const bytes = f32Model(8, 1 << 16, 5); // 2 MiB
  registry.put('one/model.safetensors', bytes, { chunk: 100_000 });
  const manager = new ModelManager();
  const reports = [];
  const snapshot = await manager.load(url('one/model.safetensors'), { onProgress: (p) => reports.push(p) });
  assert.equal(snapshot.state, 'ready');
  assert.equal(manager.residentBytes, 8 * (1 << 18)); // the tensors, no copy of the file
  checkRamp(manager, 't7', 1 << 16, 5 + 7 * (1 << 16));
  assert.ok(reports.length > 5, `${reports.length} reports`);
  monotonic(reports);
  for (const p of reports) assert.equal(p.bytesTotal, bytes.length); // Content-Length, known at once
  const last = reports.at(-1);
  assert.equal(last.bytesDone, bytes.length);
  assert.equal(last.tensorsDone, 8);
  assert.deepEqual(last.files.map((f) => [f.name, f.bytesDone, f.bytesTotal, f.cached]), [
    ['model.safetensors', bytes.length, bytes.length, false],
  ]);
  // The same URL while ready is not loaded again (no request).
  const before = registry.requests.length;
  await manager.load(url('one/model.safetensors'));
  assert.equal(registry.requests.length, before);
  await manager.close();
});

test('a diffusers folder and a sharded folder stream from a base URL', async () => {
  const pipeline = diffusersPipeline();
  for (const [name, bytes] of Object.entries(pipeline)) registry.put(`sd/${name}`, bytes, { chunk: 7 });
  const manager = new ModelManager();
  const reports = [];
  await manager.load(
    { baseUrl: url('sd/'), files: Object.keys(pipeline) },
    { onProgress: (p) => reports.push(p) },
  );
  assert.equal(manager.sampleSize, 64);
  const lease = manager.acquire();
  assert.deepEqual(lease.tensorNames().sort(), ['text_encoder/embeddings.weight', 'unet/conv_in.weight']);
  assert.deepEqual([...lease.tensor('unet/conv_in.weight').data], [...ramp(4, 10)]);
  lease.release();
  monotonic(reports);
  const total = Object.values(pipeline).reduce((n, b) => n + b.length, 0);
  assert.equal(reports.at(-1).bytesDone, total);
  assert.equal(reports.at(-1).bytesTotal, total);
  assert.equal(reports.at(-1).files.length, Object.keys(pipeline).length);

  const sharded = shardedFolder();
  for (const [name, bytes] of Object.entries(sharded)) registry.put(`sharded/${name}`, bytes);
  await manager.load({ baseUrl: url('sharded'), files: Object.keys(sharded) });
  assert.equal(manager.sampleSize, 32);
  checkRamp(manager, 'b', 2, 3);
  await manager.close();
});

test('Request, Response, ReadableStream, Blob, and a files object of them', async () => {
  const bytes = f32Model(3, 1000, 1);
  registry.put('kinds/model.safetensors', bytes);
  const manager = new ModelManager();
  const sources = [
    () => new Request(url('kinds/model.safetensors')),
    async () => fetch(url('kinds/model.safetensors')),
    () =>
      new ReadableStream({
        start(controller) {
          for (let at = 0; at < bytes.length; at += 999) controller.enqueue(bytes.slice(at, at + 999));
          controller.close();
        },
      }),
    () => new Blob([bytes.slice(0, 10), bytes.slice(10)]),
    () => ({ 'config.json': '{"sample_size": 8}', 'model.safetensors': new Blob([bytes]) }),
    // Strings in a files object are file contents: a URL is a URL object.
    () => ({ 'config.json': '{"sample_size": 8}', 'model.safetensors': new URL(url('kinds/model.safetensors')) }),
  ];
  for (const [i, make] of sources.entries()) {
    const source = await make();
    await manager.load(source);
    assert.equal(manager.state, 'ready', `source ${i}`);
    checkRamp(manager, 't2', 1000, 2001);
    assert.equal(manager.sampleSize, i >= 4 ? 8 : null);
    await manager.unload();
  }
  await manager.close();
});

test('404, a dropped connection, a short Content-Length and a stalled server each reject with their code; the manager stays usable', async () => {
  const bytes = f32Model(4, 1 << 16, 0); // 1 MiB
  registry.put('bad/truncated.safetensors', bytes, { mode: 'truncate' });
  registry.put('bad/short.safetensors', bytes, { mode: 'short-length' });
  registry.put('bad/stall.safetensors', bytes, { mode: 'stall' });
  registry.put('bad/good.safetensors', bytes);
  const manager = new ModelManager();
  const cases = [
    ['bad/missing.safetensors', ErrorCode.MissingFile, /404/],
    ['bad/truncated.safetensors', ErrorCode.Io, /truncated|terminated|failed/],
    ['bad/short.safetensors', ErrorCode.InvalidModel, /truncated/],
    ['bad/stall.safetensors', ErrorCode.Timeout, /no data for 300 ms/],
  ];
  for (const [path, code, message] of cases) {
    // Only the stalled server gets a short stallTimeout: a busy machine
    // must not turn another case into a Timeout.
    const promise = manager.load(url(path), code === ErrorCode.Timeout ? { stallTimeout: 300 } : {});
    await rejectsWith(promise, code);
    await promise.catch((error) => assert.match(error.message, message));
    assert.equal(manager.state, 'failed', path);
    assert.equal(manager.residentBytes, 0, path);
    assert.equal(manager.snapshot.error.code, code, path);
  }
  // A folder with a missing file fails the same way.
  await rejectsWith(
    manager.load({ baseUrl: url('bad/'), files: ['config.json', 'good.safetensors'] }),
    ErrorCode.MissingFile,
  );
  // A later file's 404 fails the load while an earlier one still downloads.
  registry.put('bad/slow.safetensors', f32Model(16, 1 << 16), { mode: 'slow', delayMs: 10 });
  let last = null;
  await rejectsWith(
    manager.load(
      { baseUrl: url('bad/'), files: ['slow.safetensors', 'gone.safetensors'] },
      { onProgress: (p) => (last = p) },
    ),
    ErrorCode.MissingFile,
  );
  assert.ok(last === null || last.files[0].bytesDone < last.files[0].bytesTotal, 'failed before the first file was in');
  assert.match(manager.snapshot.error.message, /gone\.safetensors/);
  await manager.load(url('bad/good.safetensors'));
  assert.equal(manager.state, 'ready');
  await manager.close();
});

test('an abort, cancel() and free() stop a download mid-way and free what it held', async () => {
  const bytes = f32Model(16, 1 << 16, 0); // 4 MiB, sent slowly
  registry.put('slow/model.safetensors', bytes, { mode: 'slow', chunk: 64 << 10, delayMs: 10 });
  for (const how of ['signal', 'cancel', 'free']) {
    const manager = new ModelManager();
    const abort = new AbortController();
    let stopped = false;
    const stop = () => {
      if (stopped) return;
      stopped = true;
      if (how === 'signal') abort.abort(new Error('user'));
      else if (how === 'cancel') manager.cancel();
      else manager.free();
    };
    const reports = [];
    const promise = manager.load(url('slow/model.safetensors'), {
      signal: abort.signal,
      onProgress: (p) => {
        reports.push(p);
        if (p.bytesDone > 1 << 20) stop();
      },
    });
    await rejectsWith(promise, ErrorCode.Cancelled);
    assert.ok(reports.at(-1).bytesDone < bytes.length, `${how}: the download went on to the end`);
    if (how !== 'free') {
      assert.equal(manager.state, 'idle');
      assert.equal(manager.residentBytes, 0);
    }
    await manager.close();
  }
});

test('a later load supersedes a download in flight, which stops', async () => {
  registry.put('race/slow.safetensors', f32Model(16, 1 << 16), { mode: 'slow', delayMs: 10 });
  registry.put('race/fast.safetensors', f32Model(2, 100, 7));
  const manager = new ModelManager();
  let first = null;
  const slow = manager.load(url('race/slow.safetensors'), { onProgress: (p) => (first = p) });
  while (first === null) await new Promise((resolve) => setTimeout(resolve, 5));
  const fast = manager.load(url('race/fast.safetensors'));
  await rejectsWith(slow, ErrorCode.Superseded);
  await fast;
  assert.equal(manager.state, 'ready');
  checkRamp(manager, 't1', 100, 107);
  assert.equal(manager.residentBytes, 2 * 100 * 4);
  await manager.close();
});

test('option checks', async () => {
  const manager = new ModelManager();
  await rejectsWith(manager.load(url('x.safetensors'), { stallTimeout: -1 }), ErrorCode.InvalidArgument);
  await rejectsWith(manager.load(url('x.safetensors'), { cache: true }), ErrorCode.InvalidArgument);
  await rejectsWith(manager.load({ baseUrl: url(''), files: [] }), ErrorCode.InvalidArgument);
  assert.equal(manager.state, 'idle');
  assert.equal(await ModelManager.clearCache(), false); // no Cache API in Node
  await manager.close();
});

test('a stream may yield ArrayBuffers or any view; anything else rejects with code 1', async () => {
  const bytes = f32Model(2, 4096, 3);
  const manager = new ModelManager();
  const streamOf = (chunks) =>
    new ReadableStream({
      start(controller) {
        for (const c of chunks) controller.enqueue(c);
        controller.close();
      },
    });
  const half = bytes.length >> 1;
  // An ArrayBuffer chunk used to throw inside the stream's lock and trap
  // the wasm module (the load never settled).
  await manager.load(streamOf([bytes.slice(0, half).buffer, new DataView(bytes.slice(half).buffer)]));
  checkRamp(manager, 't1', 4096, 3 + 4096);
  await rejectsWith(manager.load(streamOf(['not bytes'])), ErrorCode.InvalidArgument);
  // Usable afterwards.
  await manager.load(streamOf([bytes]));
  assert.equal(manager.state, 'ready');
  manager.free();
});

test('a stream load cancelled or unloaded is never joined again: the same URL loads anew', async () => {
  const bytes = f32Model(8, 1 << 16, 9);
  registry.put('again/model.safetensors', bytes, { chunk: 100_000 });
  const manager = new ModelManager();
  const first = manager.load(url('again/model.safetensors'));
  manager.cancel();
  await rejectsWith(first, ErrorCode.Cancelled);
  await manager.load(url('again/model.safetensors'));
  assert.equal(manager.state, 'ready');
  const second = manager.unload();
  await second;
  const third = manager.load(url('again/model.safetensors'));
  const unloading = manager.unload();
  await rejectsWith(third, ErrorCode.Cancelled);
  await unloading.catch(() => {});
  await manager.load(url('again/model.safetensors'));
  checkRamp(manager, 't0', 1 << 16, 9);
  manager.free();
  // Aborted through its signal, then asked for again in the same tick: the
  // retry downloads anew (it joined the spent stream, and never finished).
  const other = new ModelManager();
  const abort = new AbortController();
  const aborted = other.load(url('again/model.safetensors'), { signal: abort.signal });
  abort.abort();
  const retry = other.load(url('again/model.safetensors'));
  await assert.rejects(aborted, (e) => e.code === ErrorCode.Cancelled || e.code === ErrorCode.Superseded);
  await retry;
  checkRamp(other, 't0', 1 << 16, 9);
  other.free();
});
