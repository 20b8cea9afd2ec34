// The JS API under Node, through the package's own "exports" (the "node"
// condition), on models built in memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import init, { ModelManager, ModelManagerError, ErrorCode, Lease } from 'model-manager-wasm';
// The raw wasm-bindgen exports, the very instance the package initialised
// (the same module URL), for what the JS wrapper does not let happen.
import * as raw from '../../pkg/model_manager_wasm.js';
import {
  safetensors,
  ramp,
  f32Model,
  everyDtype,
  diffusersPipeline,
  shardedFolder,
  checkProgress,
  turns,
  whenStarted,
} from '../fixtures.js';

await init();

/** Assert `promise` rejects with a ModelManagerError of `code`. */
async function rejectsWith(promise, code) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof ModelManagerError, `not a ModelManagerError: ${error}`);
    assert.equal(error.code, code, `code ${error.code} (${error.message}), expected ${code}`);
    return true;
  });
}

function throwsWith(f, code) {
  assert.throws(f, (error) => {
    assert.ok(error instanceof ModelManagerError, `not a ModelManagerError: ${error}`);
    assert.equal(error.code, code, `code ${error.code} (${error.message}), expected ${code}`);
    return true;
  });
}

/** Record every transition as "from>to:command". */
function recorder(mm) {
  const events = [];
  const off = mm.onStateChange((e) => events.push(`${e.from}>${e.to}:${e.command}`));
  return { events, off };
}

test('full lifecycle: load with progress, lease, tensors of every dtype, unload', async () => {
  const mm = new ModelManager({ chunkSize: 8 });
  assert.equal(mm.state, 'idle');
  assert.equal(mm.sampleSize, null);
  assert.deepEqual(mm.snapshot.error, null);
  const { events } = recorder(mm);

  const reports = [];
  const snapshot = await mm.load(everyDtype(), { onProgress: (p) => reports.push(p) });
  assert.equal(snapshot.state, 'ready');
  assert.equal(mm.state, 'ready');
  assert.ok(snapshot.residentBytes > 0);
  assert.equal(snapshot.residentBytes, mm.residentBytes);
  assert.equal(snapshot.unreclaimedBytes, 0);
  assert.equal(checkProgress(reports), null);
  assert.ok(reports.length > 3, `expected several progress reports, got ${reports.length}`);
  assert.equal(reports.at(-1).tensorsTotal, 9);
  assert.deepEqual(snapshot.progress, { ...reports.at(-1) });
  assert.equal(mm.snapshot.generation, snapshot.generation);
  assert.ok(mm.residentBytes > 0);

  const lease = mm.acquire();
  assert.ok(lease instanceof Lease);
  assert.equal(mm.outstandingLeases, 1);
  assert.deepEqual(
    lease.tensorNames().sort(),
    ['bf16', 'f16', 'f32', 'f64', 'i16', 'i32', 'i64', 'u32', 'u8'],
  );
  const f32 = lease.tensor('f32');
  assert.equal(f32.dtype, 'f32');
  assert.deepEqual(f32.shape, [2, 3]);
  assert.ok(f32.data instanceof Float32Array);
  assert.deepEqual([...f32.data], [1, 2, 3, 4, 5, 6]);
  const expect = {
    f64: [Float64Array, [0.5, -2.25]],
    f16: [Uint16Array, [0x3c00, 0xc000]],
    bf16: [Uint16Array, [0x3f80, 0x4040]],
    i64: [BigInt64Array, [1n, -2n, 9007199254740993n]],
    i32: [Int32Array, [-7, 7]],
    u32: [Uint32Array, [4000000000]],
    i16: [Int16Array, [-300, 300]],
    u8: [Uint8Array, [0, 1, 254, 255]],
  };
  for (const [name, [type, values]] of Object.entries(expect)) {
    const t = lease.tensor(name);
    assert.equal(t.dtype, name);
    assert.ok(t.data instanceof type, `${name}: ${t.data.constructor.name}`);
    assert.deepEqual([...t.data], values);
  }
  assert.equal(lease.tensor('missing'), undefined);
  assert.equal(lease.info.tensors, 9);

  lease.release();
  assert.equal(lease.released, true);
  assert.equal(mm.outstandingLeases, 0);
  throwsWith(() => lease.tensorNames(), ErrorCode.InvalidArgument);
  throwsWith(() => lease.tensor('f32'), ErrorCode.InvalidArgument);
  lease.release(); // idempotent

  await mm.unload();
  assert.equal(mm.state, 'idle');
  assert.equal(mm.residentBytes, 0);
  await rejectsWith(mm.unload(), ErrorCode.InvalidTransition);
  throwsWith(() => mm.acquire(), ErrorCode.NotReady);
  assert.equal(mm.cancel(), false);

  await turns(1);
  assert.deepEqual(events, [
    'idle>loading:load',
    'loading>ready:finish',
    'ready>unloading:unload',
    'unloading>idle:drain',
  ]);
  mm.free();
});

test('progress is monotonic over many chunks and ends at the total', async () => {
  const mm = new ModelManager({ chunkSize: 1000 });
  const model = f32Model(8, 2000); // 64 000 bytes: 8 tensors of 8 chunks
  const reports = [];
  await mm.load(model.buffer, { onProgress: (p) => reports.push(p) }); // an ArrayBuffer
  assert.equal(checkProgress(reports), null);
  assert.ok(reports.length >= 64, `one report per chunk expected, got ${reports.length}`);
  assert.equal(reports.at(-1).bytesTotal, 64000);
  assert.equal(reports.at(-1).tensorsTotal, 8);
  assert.equal(reports.at(-1).file, 'model.safetensors');
  const lease = mm.acquire();
  assert.deepEqual([...lease.tensor('t7').data.slice(0, 3)], [14000, 14001, 14002]);
  lease.release();
  mm.free();
});

test('an AbortSignal aborted in the middle of a load leaves the state idle', async () => {
  const mm = new ModelManager({ chunkSize: 512 });
  const { events } = recorder(mm);
  const controller = new AbortController();
  const reports = [];
  const load = mm.load(f32Model(4, 4096), {
    signal: controller.signal,
    onProgress: (p) => {
      reports.push(p);
      if (reports.length === 1) controller.abort(new Error('user pressed stop'));
    },
  });
  await assert.rejects(load, (error) => {
    assert.ok(error instanceof ModelManagerError);
    assert.equal(error.code, ErrorCode.Cancelled);
    assert.equal(error.codeName, 'Cancelled');
    assert.equal(error.cause?.message, 'user pressed stop');
    return true;
  });
  assert.equal(mm.state, 'idle');
  assert.equal(reports.length, 1, 'no progress after the abort');
  assert.ok(reports[0].bytesDone < reports[0].bytesTotal, 'aborted in the middle');
  assert.equal(mm.residentBytes, 0);
  await turns(1);
  assert.deepEqual(events, ['idle>loading:load', 'loading>idle:cancel']);

  // The manager is still usable.
  await mm.load(f32Model(1, 4));
  assert.equal(mm.state, 'ready');
  mm.free();
});

test('an already aborted signal rejects at once and touches nothing', async () => {
  const mm = new ModelManager();
  const { events } = recorder(mm);
  const controller = new AbortController();
  controller.abort();
  await rejectsWith(mm.load(f32Model(1, 4), { signal: controller.signal }), ErrorCode.Cancelled);
  assert.equal(mm.state, 'idle');
  await turns(1);
  assert.deepEqual(events, []);
  mm.free();
});

test('cancel() rejects the load with code 3 once its memory is back; cancel() with nothing to cancel returns false', async () => {
  const mm = new ModelManager({ chunkSize: 256 });
  const seen = [];
  mm.onStateChange((e) => seen.push(e));
  const { onProgress, started } = whenStarted();
  const load = mm.load(f32Model(2, 4096), { onProgress });
  let rejected = false;
  load.catch(() => {
    rejected = true;
  });
  assert.equal(mm.state, 'loading');
  await started;
  assert.equal(mm.cancel(), true);
  // The load still holds what it read: the state stays loading, with its
  // bytes resident, until the load has freed them (at its next chunk).
  assert.equal(mm.state, 'loading');
  const during = mm.snapshot;
  assert.equal(during.state, 'loading');
  assert.ok(during.residentBytes > 0, `resident ${during.residentBytes}`);
  assert.equal(during.unreclaimedBytes, 0);
  assert.equal(rejected, false);
  await rejectsWith(load, ErrorCode.Cancelled);
  assert.equal(mm.state, 'idle');
  assert.equal(mm.residentBytes, 0);
  assert.equal(mm.snapshot.residentBytes, 0);
  await turns(1);
  assert.deepEqual(
    seen.map((e) => `${e.from}>${e.to}:${e.command}`),
    ['idle>loading:load', 'loading>idle:cancel'],
  );
  // The idle event carries 0 resident bytes.
  assert.equal(seen[1].snapshot.residentBytes, 0);
  assert.equal(seen[1].snapshot.unreclaimedBytes, 0);
  assert.equal(mm.cancel(), false);

  // unload() while loading cancels too, with the same order: loading until
  // the memory is back, then idle; its promise resolves then.
  const again = whenStarted();
  const second = mm.load(f32Model(2, 4096, 7), { onProgress: again.onProgress });
  await again.started;
  const unload = mm.unload();
  assert.equal(mm.state, 'loading');
  assert.ok(mm.residentBytes > 0);
  await unload;
  assert.equal(mm.state, 'idle');
  assert.equal(mm.residentBytes, 0);
  await rejectsWith(second, ErrorCode.Cancelled);
  await rejectsWith(mm.unload(), ErrorCode.InvalidTransition);
  mm.free();
});

test('a second load supersedes the first (code 4), latest request wins', async () => {
  const mm = new ModelManager({ chunkSize: 256 });
  const { onProgress, started } = whenStarted();
  const first = mm.load(f32Model(2, 4096, 0), { onProgress });
  await started;
  assert.equal(mm.state, 'loading');
  const second = mm.load(f32Model(1, 4, 500));
  await rejectsWith(first, ErrorCode.Superseded);
  const snapshot = await second;
  assert.equal(snapshot.state, 'ready');
  const lease = mm.acquire();
  assert.deepEqual(lease.tensorNames(), ['t0']);
  assert.deepEqual([...lease.tensor('t0').data], [500, 501, 502, 503]);
  lease.release();
  mm.free();
});

test('switching models unloads the first, then loads the second', async () => {
  const mm = new ModelManager();
  const a = f32Model(1, 4, 0);
  const b = shardedFolder();
  await mm.load(a);
  const { events } = recorder(mm);
  const snapshot = await mm.load(b);
  assert.equal(snapshot.state, 'ready');
  assert.equal(mm.sampleSize, 32);
  const lease = mm.acquire();
  assert.deepEqual(lease.tensorNames().sort(), ['a', 'b']);
  assert.deepEqual([...lease.tensor('b').data], [3, 4]);
  lease.release();
  await turns(1);
  assert.deepEqual(events, [
    'ready>unloading:unload',
    'unloading>idle:drain',
    'idle>loading:load',
    'loading>ready:finish',
  ]);
  mm.free();
});

test('loading the same buffer again while ready is not a reload', async () => {
  const mm = new ModelManager();
  const model = f32Model(1, 4);
  const first = await mm.load(model);
  const { events } = recorder(mm);
  const again = await mm.load(model);
  assert.equal(again.generation, first.generation);
  await turns(1);
  assert.deepEqual(events, []);
  mm.free();
});

test('a diffusers layout in memory: components, sample size, prefixed names', async () => {
  const mm = new ModelManager();
  await mm.load(diffusersPipeline());
  assert.equal(mm.sampleSize, 64);
  assert.equal(mm.info.config._class_name, 'StableDiffusionPipeline');
  const lease = mm.acquire();
  assert.deepEqual(lease.tensorNames().sort(), ['text_encoder/embeddings.weight', 'unet/conv_in.weight']);
  assert.deepEqual([...lease.tensor('unet/conv_in.weight').data], [10, 11, 12, 13]);
  assert.deepEqual([...lease.tensor('embeddings.weight').data], [100, 101, 102]);
  const components = Object.fromEntries(lease.components.map((c) => [c.name, c]));
  assert.equal(components.unet.config.sample_size, 64);
  assert.equal(components.scheduler.tensors, 0);
  lease.release();
  mm.free();
});

test('a corrupt buffer rejects with code 8 (InvalidModel) and leaves the manager usable', async () => {
  const mm = new ModelManager();
  const good = f32Model(1, 16);
  const truncated = good.slice(0, good.length - 10);
  const hugeHeader = new Uint8Array(16);
  new DataView(hugeHeader.buffer).setBigUint64(0, 1n << 40n, true);
  const garbage = new Uint8Array(64).fill(0x7b);
  for (const bad of [truncated, hugeHeader, garbage]) {
    await rejectsWith(mm.load(bad), ErrorCode.InvalidModel);
    assert.equal(mm.state, 'failed');
    assert.equal(mm.snapshot.error.code, ErrorCode.InvalidModel);
    assert.match(mm.snapshot.error.message, /model\.safetensors/);
  }
  mm.reset();
  assert.equal(mm.state, 'idle');
  throwsWith(() => mm.reset(), ErrorCode.InvalidTransition);
  // A failed manager loads again (Failed --load--> Loading).
  await rejectsWith(mm.load(truncated), ErrorCode.InvalidModel);
  await mm.load(good);
  assert.equal(mm.state, 'ready');
  mm.free();
});

test('bad folders: a missing shard (10), a shard outside the folder (11), bad JSON (9)', async () => {
  const mm = new ModelManager();
  const missing = shardedFolder();
  delete missing['model-00002-of-00002.safetensors'];
  await rejectsWith(mm.load(missing), ErrorCode.MissingFile);
  const escape = shardedFolder();
  escape['model.safetensors.index.json'] = JSON.stringify({ weight_map: { a: '../../etc/passwd' } });
  await rejectsWith(mm.load(escape), ErrorCode.PathEscape);
  const badJson = shardedFolder();
  badJson['config.json'] = '{ not json';
  await rejectsWith(mm.load(badJson), ErrorCode.InvalidConfig);
  mm.free();
});

test('a lease blocks an unload until released', async () => {
  const mm = new ModelManager();
  await mm.load(f32Model(2, 256));
  const lease = mm.acquire();
  let settled = false;
  const unload = mm.unload().then(() => {
    settled = true;
  });
  assert.equal(mm.state, 'unloading');
  await turns(5);
  assert.equal(mm.state, 'unloading');
  assert.equal(settled, false);
  assert.ok(mm.residentBytes > 0);
  // The lease still reads the model.
  assert.equal(lease.tensor('t1').data[0], 256);
  throwsWith(() => mm.acquire(), ErrorCode.NotReady);
  lease.release();
  await unload;
  assert.equal(mm.state, 'idle');
  assert.equal(mm.residentBytes, 0);
  mm.free();
});

test('onStateChange: every transition in order, with snapshots; unsubscribe stops it', async () => {
  const mm = new ModelManager({ chunkSize: 64 });
  const seen = [];
  const off = mm.onStateChange((e) => seen.push(e));
  await mm.load(f32Model(1, 64));
  const superseded = mm.load(f32Model(1, 4096));
  const final = mm.load(f32Model(1, 8));
  await rejectsWith(superseded, ErrorCode.Superseded);
  await final;
  await rejectsWith(mm.load(new Uint8Array(3)), ErrorCode.InvalidModel);
  mm.reset();
  await turns(1);
  off();
  off(); // idempotent
  await mm.load(f32Model(1, 4));
  await turns(1);
  assert.deepEqual(
    seen.map((e) => `${e.from}>${e.to}:${e.command}`),
    [
      'idle>loading:load',
      'loading>ready:finish',
      'ready>unloading:unload', // load(4096) while ready: unload first
      'unloading>idle:drain', // load(8) replaced it while unloading
      'idle>loading:load',
      'loading>ready:finish',
      'ready>unloading:unload',
      'unloading>idle:drain',
      'idle>loading:load',
      'loading>failed:fail',
      'failed>idle:reset',
    ],
  );
  for (let i = 0; i < seen.length; i++) {
    assert.equal(seen[i].snapshot.state, seen[i].to);
    if (i > 0) assert.ok(seen[i].snapshot.generation > seen[i - 1].snapshot.generation);
  }
  const failed = seen.find((e) => e.to === 'failed');
  assert.equal(failed.snapshot.error.code, ErrorCode.InvalidModel);
  // A listener that throws does not stop the others (it is reported).
  const reported = [];
  const original = console.error;
  console.error = (...args) => reported.push(args);
  try {
    const order = [];
    mm.onStateChange(() => {
      throw new Error('listener bug');
    });
    mm.onStateChange((e) => order.push(e.to));
    await mm.unload();
    await turns(1);
    assert.deepEqual(order, ['unloading', 'idle']);
  } finally {
    console.error = original;
  }
  assert.ok(reported.length >= 2);
  mm.free();
});

test('free() during a load cancels it and frees everything; later calls throw', async () => {
  const mm = new ModelManager({ chunkSize: 512 });
  let reports = 0;
  const load = mm.load(f32Model(4, 4096), {
    onProgress: () => {
      reports += 1;
      if (reports === 2) mm.free();
    },
  });
  await rejectsWith(load, ErrorCode.Cancelled);
  assert.equal(reports, 2);
  assert.equal(mm.freed, true);
  throwsWith(() => mm.state, ErrorCode.ShutDown);
  throwsWith(() => mm.snapshot, ErrorCode.ShutDown);
  throwsWith(() => mm.acquire(), ErrorCode.ShutDown);
  throwsWith(() => mm.cancel(), ErrorCode.ShutDown);
  throwsWith(() => mm.onStateChange(() => {}), ErrorCode.ShutDown);
  await rejectsWith(mm.load(f32Model(1, 4)), ErrorCode.ShutDown);
  await rejectsWith(mm.unload(), ErrorCode.ShutDown);
  mm.free(); // idempotent
});

test('free() right after load() and with leases out; Symbol.dispose; close()', async () => {
  const a = new ModelManager();
  const load = a.load(f32Model(1, 1 << 16));
  a[Symbol.dispose]();
  await rejectsWith(load, ErrorCode.Cancelled);
  throwsWith(() => a.state, ErrorCode.ShutDown);

  const b = new ModelManager();
  await b.load(f32Model(1, 16));
  const lease = b.acquire();
  const unload = b.unload();
  b.free(); // releases the lease, so the unload finishes
  await unload;
  assert.equal(lease.released, true);
  throwsWith(() => lease.tensorNames(), ErrorCode.InvalidArgument);

  const c = new ModelManager();
  await c.load(f32Model(1, 16));
  const held = c.acquire();
  held[Symbol.dispose]();
  assert.equal(held.released, true);
  c.free();

  // close(): free(), and a promise for the end of the shutdown.
  const d = new ModelManager({ chunkSize: 256 });
  const { onProgress, started } = whenStarted();
  const loading = d.load(f32Model(2, 4096), { onProgress });
  await started;
  const closed = d.close();
  assert.equal(d.freed, true);
  assert.equal(d.close(), closed);
  await closed;
  await rejectsWith(loading, ErrorCode.Cancelled);
  const e = new ModelManager();
  await e.load(f32Model(1, 16));
  e.acquire();
  await e[Symbol.asyncDispose]();
  throwsWith(() => e.state, ErrorCode.ShutDown);
});

test('after close(), every call throws or rejects with code 15 (ShutDown); close() is bounded', async () => {
  const mm = new ModelManager({ chunkSize: 256 });
  const { onProgress, started } = whenStarted();
  const loading = mm.load(f32Model(2, 4096), { onProgress });
  await started;
  const source = f32Model(1, 4);
  const start = performance.now();
  const closed = mm.close();
  // At once, before the shutdown has finished:
  throwsWith(() => mm.state, ErrorCode.ShutDown);
  await rejectsWith(mm.load(source), ErrorCode.ShutDown);
  await closed;
  // The load in flight stops at its next chunk: no drain to wait for.
  const took = performance.now() - start;
  assert.ok(took < 1000, `close() took ${took} ms`);
  await rejectsWith(loading, ErrorCode.Cancelled);
  for (const read of ['state', 'snapshot', 'sampleSize', 'info', 'residentBytes', 'outstandingLeases']) {
    throwsWith(() => mm[read], ErrorCode.ShutDown);
  }
  throwsWith(() => mm.acquire(), ErrorCode.ShutDown);
  throwsWith(() => mm.cancel(), ErrorCode.ShutDown);
  throwsWith(() => mm.reset(), ErrorCode.ShutDown);
  throwsWith(() => mm.onStateChange(() => {}), ErrorCode.ShutDown);
  await rejectsWith(mm.load(source), ErrorCode.ShutDown);
  await rejectsWith(mm.load(source, { signal: new AbortController().signal }), ErrorCode.ShutDown);
  await rejectsWith(mm.unload(), ErrorCode.ShutDown);
  assert.equal(mm.freed, true);
  // Closing again, in every spelling, is a no-op.
  mm.free();
  await mm.close();
  mm[Symbol.dispose]();
  await mm[Symbol.asyncDispose]();
});

test('raw layer: after shutdown commands fail with code 15, reads work; a lease past shutdown is unreclaimed', async () => {
  const codeOf = (f) => {
    try {
      f();
    } catch (error) {
      return error.code;
    }
    return 'no error';
  };
  const m = new raw.RawManager(null, null, null);
  const bytesIn = f32Model(2, 16);
  assert.equal(m.join(bytesIn), undefined); // nothing loaded from it yet
  const load = m.loadFrom(bytesIn, raw.RawSource.fromBytes(bytesIn));
  const ready = await load.wait(null);
  load.free();
  // The same JS object joins the ready model (the core's decision, no copy);
  // an equal but different object does not.
  const joined = m.join(bytesIn);
  assert.equal((await joined.wait(null)).state, 'ready');
  joined.free();
  assert.equal(m.join(f32Model(2, 16)), undefined);
  assert.equal(ready.state, 'ready');
  assert.equal(ready.unreclaimedBytes, 0);
  const bytes = m.residentBytes;
  assert.equal(bytes, 2 * 16 * 4);
  const lease = m.acquire();
  // The lease outlives the shutdown: wasm32 has no timer, so the drain gives
  // up on it at once and its bytes are no longer the manager's.
  await m.shutdown();
  const after = m.snapshot;
  assert.equal(after.state, 'idle');
  assert.equal(after.residentBytes, 0);
  assert.equal(after.unreclaimedBytes, bytes);
  assert.equal(lease.tensor('t1').data[0], 16); // still readable
  // Commands answer ShutDown (15), from the core; nothing crashes.
  const other = f32Model(1, 4);
  assert.equal(codeOf(() => m.loadFrom(other, raw.RawSource.fromBytes(other))), ErrorCode.ShutDown);
  assert.equal(codeOf(() => m.acquire()), ErrorCode.ShutDown);
  assert.equal(codeOf(() => m.reset()), ErrorCode.ShutDown);
  assert.equal(m.cancel(), false);
  await assert.rejects(m.unload(), (error) => error.code === ErrorCode.ShutDown);
  await m.shutdown(); // idempotent
  lease.release();
  lease.free();
  assert.equal(m.snapshot.unreclaimedBytes, 0);
  m.free();
});

test('options: chunkSize, dtype conversion, memory budget; invalid arguments', async () => {
  throwsWith(() => new ModelManager({ chunkSize: -1 }), ErrorCode.InvalidArgument);
  throwsWith(() => new ModelManager({ chunkSize: 'big' }), ErrorCode.InvalidArgument);
  throwsWith(() => new ModelManager({ dtype: 'int8' }), ErrorCode.InvalidArgument);
  throwsWith(() => new ModelManager({ dtype: 'u8' }), ErrorCode.InvalidArgument);

  const half = new ModelManager({ dtype: 'f16' });
  await half.load(everyDtype());
  const lease = half.acquire();
  const t = lease.tensor('f32');
  assert.equal(t.dtype, 'f16');
  assert.ok(t.data instanceof Uint16Array);
  assert.equal(t.data[0], 0x3c00); // 1.0 in f16
  assert.equal(lease.tensor('i32').dtype, 'i32'); // integers keep their dtype
  lease.release();
  half.free();

  // wasm32 holds no buffer of 2 GiB: refused up front, the instance intact
  // (the zeroed ArrayBuffer is virtual memory, never touched).
  const huge = new ModelManager();
  await rejectsWith(huge.load(new Uint8Array(2 ** 31)), ErrorCode.InsufficientMemory);
  await rejectsWith(huge.load({ 'model.safetensors': new ArrayBuffer(2 ** 31) }), ErrorCode.InsufficientMemory);
  assert.equal(huge.state, 'idle');
  await huge.load(f32Model(1, 4));
  huge.free();

  const small = new ModelManager({ memoryBudget: 100 });
  await rejectsWith(small.load(f32Model(1, 1000)), ErrorCode.InsufficientMemory);
  await rejectsWith(small.load(42), ErrorCode.InvalidArgument);
  await rejectsWith(small.load({ 'config.json': 42 }), ErrorCode.InvalidArgument);
  await rejectsWith(small.load({}), ErrorCode.InvalidArgument);
  await rejectsWith(small.load(f32Model(1, 4), { onProgress: 'no' }), ErrorCode.InvalidArgument);
  assert.throws(() => small.onStateChange('no'), ModelManagerError);
  small.free();
});

test('buffers of every kind: Uint8Array, ArrayBuffer, Node Buffer, other views, Map', async () => {
  const mm = new ModelManager();
  const model = safetensors({ x: { dtype: 'F32', shape: [2], data: ramp(2, 7) } });
  const padded = new Uint8Array(model.length + 16);
  padded.set(model, 8);
  for (const source of [
    model,
    model.buffer,
    Buffer.from(model),
    new DataView(padded.buffer, 8, model.length),
    new Map([['model.safetensors', model]]),
  ]) {
    await mm.load(source);
    const lease = mm.acquire();
    assert.deepEqual([...lease.tensor('x').data], [7, 8]);
    lease.release();
    await mm.unload();
  }
  mm.free();
});

test('the README example (examples/node.mjs) streams a diffusers folder and a file from disk, and a URL', async () => {
  const { mkdtemp, mkdir, writeFile, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join, dirname } = await import('node:path');
  const { execFile } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const dir = await mkdtemp(join(tmpdir(), 'mm-example-'));
  try {
    for (const [name, bytes] of Object.entries(diffusersPipeline())) {
      await mkdir(join(dir, dirname(name)), { recursive: true });
      await writeFile(join(dir, name), bytes);
    }
    const script = fileURLToPath(new URL('../../examples/node.mjs', import.meta.url));
    const stdout = await new Promise((resolve, reject) =>
      execFile(process.execPath, [script, dir], (error, out, err) =>
        error ? reject(new Error(`${error.message}\n${err}`)) : resolve(out),
      ),
    );
    assert.match(stdout, /state: idle -> loading \(load\)/);
    assert.match(stdout, /ready: sample_size = 64, 28 bytes resident/);
    assert.match(stdout, /unet\/conv_in\.weight: f32 \[2,2\] first = 10/);
    assert.match(stdout, /unloaded: 0 bytes resident/);
    // A single file from disk, and a URL.
    const single = join(dir, 'unet/diffusion_pytorch_model.safetensors');
    const run = (arg) =>
      new Promise((resolve, reject) =>
        execFile(process.execPath, [script, arg], (error, out, err) =>
          error ? reject(new Error(`${error.message}\n${err}`)) : resolve(out),
        ),
      );
    assert.match(await run(single), /conv_in\.weight: f32 \[2,2\] first = 10/);
    const { createServer } = await import('node:http');
    const { readFile } = await import('node:fs/promises');
    const bytes = await readFile(single);
    const server = createServer((req, res) => res.writeHead(200, { 'content-length': bytes.length }).end(bytes));
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const out = await run(`http://127.0.0.1:${server.address().port}/model.safetensors`);
      assert.match(out, new RegExp(`loading: ${bytes.length}/${bytes.length} bytes, 1/1 tensors`));
      assert.match(out, /conv_in\.weight: f32 \[2,2\] first = 10/);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
