// ModelPool under Node, through the package's own "exports": the pool's
// semantics as the Rust tests check them (tests/pool.rs), from JavaScript.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import init, { ModelPool, ModelManagerError, ErrorCode } from 'model-manager-wasm';
import { f32Model, diffusersPipeline } from '../fixtures.js';

await init();

/** 4 tensors of 4096 f32: 64 KiB, values from `seed`. */
const SIZE = 4 * 4096 * 4;
const model = (seed) => f32Model(4, 4096, seed);
const seeds = [0, 100_000, 200_000, 300_000];

async function rejectsWith(promise, code) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof ModelManagerError, `not a ModelManagerError: ${error}`);
    assert.equal(error.code, code, `code ${error.code} (${error.message}), expected ${code}`);
    return true;
  });
}

function pool(fit, options = {}) {
  return new ModelPool({ memoryBudget: fit * SIZE + SIZE / 2, ...options });
}

function addAll(p, n) {
  for (let i = 0; i < n; i++) p.add(`m${i}`, model(seeds[i]));
}

/** The first value of a leased model: which seed it was built from. */
const seedOf = (lease) => lease.tensor('t0').data[0];

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what, f) {
  for (let i = 0; i < 400; i++) {
    if (f()) return;
    await sleep(5);
  }
  assert.fail(`timed out waiting for ${what}`);
}

test('the least recently used model is evicted for a third, never a leased one', async () => {
  const p = pool(2);
  addAll(p, 3);
  const events = [];
  p.onEvent((e) => events.push(e));
  (await p.acquire('m0')).release();
  const b = await p.acquire('m1');
  assert.equal(seedOf(b), seeds[1]);
  // m1 is leased: m0, the only model without a lease, is evicted.
  const c = await p.acquire('m2');
  assert.equal(seedOf(c), seeds[2]);
  await until('m0 freed', () => p.status('m0').state === 'idle');
  const s = p.snapshot;
  assert.equal(s.charged, 2 * SIZE);
  assert.ok(s.charged <= s.budget);
  assert.deepEqual(
    { loads: s.counters.loads, evictions: s.counters.evictions, misses: s.counters.misses },
    { loads: 3, evictions: 1, misses: 3 },
  );
  const m0 = events.filter((e) => e.id === 'm0').map((e) => e.kind + (e.reason ? `:${e.reason}:${e.forId}` : ''));
  assert.deepEqual(m0, ['queued', 'loading', 'ready', 'unloading:evicted:m2', 'freed']);
  b.release();
  c.release();
  await p.close();
});

test('a load waits for a lease, and gives up naming what blocked it', async () => {
  const p = pool(2, { admissionTimeout: 100 });
  addAll(p, 3);
  const a = await p.acquire('m0');
  const b = await p.acquire('m1');
  const error = await p.acquire('m2').then(
    () => assert.fail('resolved'),
    (e) => e,
  );
  assert.equal(error.code, ErrorCode.MemoryBusy);
  assert.equal(error.codeName, 'MemoryBusy');
  assert.match(error.message, /"m0".*1 lease.*"m1".*1 lease/);
  // A waiter that stops waiting leaves no trace; the load goes on once
  // memory is released.
  const ac = new AbortController();
  const waiting = p.acquire('m2', { signal: ac.signal });
  await until('a waiter', () => p.status('m2').waiters === 1);
  ac.abort();
  await rejectsWith(waiting, ErrorCode.Cancelled);
  assert.equal(p.status('m2').waiters, 0);
  b.release();
  await until('m2 ready', () => p.status('m2').state === 'ready');
  a.release();
  await p.close();
});

test('working memory is reserved with a lease; the headroom comes off the budget', async () => {
  // A budget for three models less a headroom of one: two, or one with a
  // reserve of one model's bytes.
  const p = new ModelPool({ memoryBudget: 3 * SIZE + SIZE / 2, headroom: SIZE, admissionTimeout: 100 });
  addAll(p, 2);
  const plain = await p.acquire('m1');
  assert.equal(plain.workingBytes, 0);
  plain.release();
  const lease = await p.acquire('m0', { workingBytes: SIZE });
  assert.equal(lease.workingBytes, SIZE);
  const s = p.snapshot;
  assert.equal(s.charged, 2 * SIZE);
  assert.equal(s.counters.evictions, 1);
  // m1 waits for the reserve, then gives up.
  await rejectsWith(p.acquire('m1'), ErrorCode.MemoryBusy);
  lease.release();
  assert.equal(p.snapshot.charged, SIZE);
  // More than could ever fit beside the model: refused at once.
  await rejectsWith(p.acquire('m0', { workingBytes: 2 * SIZE }), ErrorCode.InsufficientMemory);
  await rejectsWith(p.acquire('m0', { workingBytes: -1 }), ErrorCode.InvalidArgument);
  await rejectsWith(p.acquire('m0', { workingBytes: 1.5 }), ErrorCode.InvalidArgument);
  await rejectsWith(p.acquire('m0', { workingBytes: '1' }), ErrorCode.InvalidArgument);
  const zero = await p.acquire('m0', { workingBytes: 0 });
  assert.equal(zero.workingBytes, 0);
  zero.release();
  await p.close();
  assert.throws(
    () => new ModelPool({ memoryBudget: SIZE, headroom: 2 * SIZE }),
    (e) => e.code === ErrorCode.InvalidArgument,
  );
  // 0 is no headroom; beyond 4 GiB is a byte count like any other.
  new ModelPool({ memoryBudget: SIZE, headroom: 0 }).free();
  new ModelPool({ memoryBudget: 2 ** 40, headroom: 2 ** 33 }).free();
});

test('a pipeline is one model per component', async () => {
  const p = new ModelPool({ memoryBudget: 1 << 20 });
  const ids = p.addPipeline('sd', diffusersPipeline());
  assert.deepEqual([...ids].sort(), ['sd/text_encoder', 'sd/unet']);
  const unet = await p.acquire('sd/unet');
  assert.deepEqual(
    unet.components.map((c) => c.name),
    ['unet'],
  );
  assert.equal(p.status('sd/text_encoder').state, 'idle');
  unet.release();
  // Taken: nothing added; not a pipeline: refused.
  assert.throws(() => p.addPipeline('sd', diffusersPipeline()), (e) => e.code === ErrorCode.InvalidArgument);
  assert.throws(() => p.addPipeline('one', model(0)), (e) => e.code === ErrorCode.InvalidArgument);
  assert.equal(p.snapshot.models.length, 2);
  await p.close();
});

test('pins, keep-alive, unknown ids, the queue', async () => {
  const p = pool(1, { retryCooldown: 0 });
  p.add('m0', model(seeds[0]), { pinned: true });
  p.add('m1', model(seeds[1]), { keepAlive: 50 });
  (await p.acquire('m0')).release();
  await rejectsWith(p.acquire('m1'), ErrorCode.InsufficientMemory);
  p.unpin('m0');
  const lease = await p.acquire('m1');
  assert.equal(p.status('m0').state, 'idle', 'unpinned, it was evicted');
  // The keep-alive never runs while a lease is held.
  await sleep(120);
  assert.equal(p.status('m1').state, 'ready');
  lease.release();
  await until('m1 expired', () => p.status('m1').state === 'idle');
  assert.equal(p.snapshot.counters.expirations, 1);
  await rejectsWith(p.acquire('nope'), ErrorCode.UnknownModel);
  assert.throws(() => p.add('m0', model(0)), (e) => e.code === ErrorCode.InvalidArgument);
  assert.throws(() => p.tryAcquire('m0'), (e) => e.code === ErrorCode.NotReady);
  assert.match(p.metricsText(), /^model_manager_pool_expirations_total 1$/m);
  await p.close();
  assert.throws(() => p.status('m0'), (e) => e.code === ErrorCode.ShutDown);
  await rejectsWith(p.acquire('m0'), ErrorCode.ShutDown);
});

test('a reload serves new leases while old leases keep their version', async () => {
  const p = pool(2);
  p.add('a', model(seeds[0]));
  const old = await p.acquire('a');
  assert.equal(old.version, 1);
  assert.equal(await p.reload('a', model(seeds[1])), 2);
  const fresh = await p.acquire('a');
  assert.equal(fresh.version, 2);
  assert.equal(seedOf(fresh), seeds[1]);
  assert.equal(seedOf(old), seeds[0], 'the old lease still reads its version');
  assert.equal(p.snapshot.charged, 2 * SIZE);
  old.release();
  await until('v1 freed', () => p.snapshot.charged === SIZE);
  // A failed reload leaves the serving version.
  await rejectsWith(p.reload('a', new Uint8Array([1, 2, 3])), ErrorCode.InvalidModel);
  assert.equal(p.status('a').version, 2);
  assert.equal(p.status('a').lastError.code, ErrorCode.InvalidModel);
  fresh.release();
  // Freed while leases are out: they are released; later calls say so.
  const held = await p.acquire('a');
  await p.close();
  assert.equal(held.released, true);
});

test('durations beyond what a Duration holds mean never, not a trap', async () => {
  const p = new ModelPool({
    memoryBudget: 2 * SIZE,
    keepAlive: Number.MAX_VALUE,
    admissionTimeout: Number.MAX_VALUE,
    retryCooldown: Number.MAX_VALUE,
  });
  p.add('m0', model(seeds[0]), { keepAlive: Number.MAX_VALUE });
  p.setKeepAlive('m0', 1e300);
  const lease = await p.acquire('m0');
  assert.equal(seedOf(lease), seeds[0]);
  lease.release();
  assert.equal(p.status('m0').state, 'ready');
  await p.close();
});
