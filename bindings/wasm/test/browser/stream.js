// Streaming in a real browser: models downloaded from the test's HTTP
// server (test/model-server.mjs, under /models/) straight into wasm memory,
// with progress, abort, the Cache API, errors, a diffusers folder, and a
// load in a Web Worker while the main thread keeps ticking. Reports to
// `window.__result` ({ ok, checks, failure, timings }).
import init, { ModelManager, WorkerModelManager, ModelManagerError, ErrorCode } from '../../js/browser.js';
import initRaw from '../../pkg/model_manager_wasm.js';

const log = document.getElementById('log');
const checks = [];
const timings = {};
const MiB = 1 << 20;
const models = new URL('/models/', location.href);
const params = new URLSearchParams(location.search);
const bigBytes = Number(params.get('bigBytes'));
const bigData = Number(params.get('bigData'));

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
  checks.push(what);
  log.textContent += `ok - ${what}\n`;
}

async function rejectsWith(promise, code, what) {
  try {
    await promise;
  } catch (error) {
    check(error instanceof ModelManagerError && error.code === code, `${what} (code ${error.code}: ${error.message})`);
    return error;
  }
  throw new Error(`check failed: ${what}: the promise resolved`);
}

const requests = async () => (await fetch('/__requests')).json();
const count = (list, path) => list.filter((p) => p === path).length;

function monotonic(reports) {
  for (let i = 1; i < reports.length; i++) {
    if (reports[i].bytesDone < reports[i - 1].bytesDone) return false;
    if (reports[i].tensorsDone < reports[i - 1].tensorsDone) return false;
  }
  return true;
}

/** Runs first, in a fresh instance: memory grows only for this model. */
async function big(memory) {
  const before = memory();
  const mm = new ModelManager();
  const reports = [];
  const t = performance.now();
  await mm.load(new URL('big/model.safetensors', models), { onProgress: (p) => reports.push(p) });
  timings.bigLoadMs = Math.round(performance.now() - t);
  const after = memory();
  timings.wasmMemoryBeforeMiB = +(before / MiB).toFixed(2);
  timings.wasmMemoryAfterMiB = +(after / MiB).toFixed(2);
  timings.modelMiB = +(bigBytes / MiB).toFixed(2);
  check(
    after <= bigBytes + 8 * MiB,
    `peak wasm memory ${(after / MiB).toFixed(1)} MiB <= model ${(bigBytes / MiB).toFixed(1)} MiB + 8 MiB`,
  );
  check(mm.residentBytes === bigData, `resident bytes are the tensors' (${mm.residentBytes})`);
  check(reports.length > 10 && monotonic(reports), `${reports.length} progress reports, monotonic`);
  check(reports.every((p) => p.bytesTotal === bigBytes), 'bytesTotal is the Content-Length from the first report');
  check(reports.at(-1).bytesDone === bigBytes && reports.at(-1).tensorsDone === reports.at(-1).tensorsTotal, 'progress ends at the totals');
  const lease = mm.acquire();
  const { data } = lease.tensor('t63');
  check(data[5] === 63 * 262144 + 5, 'the 64 MiB model streamed intact');
  lease.release();
  await mm.close();
}

async function abortMidDownload() {
  const mm = new ModelManager();
  const abort = new AbortController();
  let last = null;
  const promise = mm.load(new URL('slow/model.safetensors', models), {
    signal: abort.signal,
    onProgress: (p) => {
      last = p;
      if (p.bytesDone > MiB) abort.abort(new Error('stop'));
    },
  });
  const error = await rejectsWith(promise, ErrorCode.Cancelled, 'an abort mid-download rejects with Cancelled');
  check(error.cause?.message === 'stop', 'the abort reason is the cause');
  check(last.bytesDone < last.bytesTotal, `stopped at ${last.bytesDone} of ${last.bytesTotal} bytes`);
  check(mm.state === 'idle' && mm.residentBytes === 0, 'idle, nothing held after the abort');
  await mm.close();
}

async function cached() {
  await ModelManager.clearCache();
  const url = new URL('cached/model.safetensors', models);
  const path = 'cached/model.safetensors';
  const mm = new ModelManager();
  const first = [];
  await mm.load(url.href, { cache: true, onProgress: (p) => first.push(p) });
  await mm.unload();
  const n1 = count(await requests(), path);
  check(n1 === 1 && first.at(-1).files[0].cached === false, 'the first load downloads the file once');
  const second = [];
  await mm.load(url.href, { cache: true, onProgress: (p) => second.push(p) });
  const n2 = count(await requests(), path);
  check(n2 === n1, `the second load made no request (${n2 - n1})`);
  check(second.at(-1).files[0].cached === true && second.at(-1).bytesDone === first.at(-1).bytesDone, 'and came from the cache, whole');
  const lease = mm.acquire();
  check(lease.tensor('t1').data[2] === 1 * 4096 + 2, 'the cached model is intact');
  lease.release();
  await mm.unload();
  const third = [];
  await mm.load(url.href, { cache: 'revalidate', onProgress: (p) => third.push(p) });
  check(
    count(await requests(), path) === n2 + 1 && third.at(-1).files[0].cached === true,
    "cache: 'revalidate' asks once (If-None-Match, 304) and reads the cached file",
  );
  await mm.unload();
  // An aborted load from the cache keeps the entry.
  const abort = new AbortController();
  const aborted = mm.load(url.href, { cache: true, signal: abort.signal });
  abort.abort();
  await rejectsWith(aborted, ErrorCode.Cancelled, 'a load from the cache aborted');
  await mm.load(url.href, { cache: true });
  check(count(await requests(), path) === n2 + 1, 'the entry survives an aborted load');
  await mm.unload();
  // A damaged entry (cut short, with its length recorded as cut) fails the
  // load and is deleted: the next load downloads the file again.
  const whole = new Uint8Array(await (await fetch(url.href)).arrayBuffer());
  const before = count(await requests(), path);
  const cut = whole.subarray(0, whole.length - 1000);
  await (await caches.open('model-manager-v1')).put(
    url.href,
    new Response(cut, { headers: { 'content-length': String(cut.length) } }),
  );
  await rejectsWith(mm.load(url.href, { cache: true }), ErrorCode.InvalidModel, 'a damaged cached file fails the load');
  await mm.load(url.href, { cache: true });
  check(count(await requests(), path) === before + 1 && mm.state === 'ready', 'and is replaced by a fresh download');
  await mm.unload();
  check((await ModelManager.clearCache()) === true, 'clearCache() deletes the cache');
  await mm.load(url.href, { cache: true });
  check(count(await requests(), path) === before + 2, 'after clearCache() the file is downloaded again');
  await mm.close();
}

async function errors() {
  const mm = new ModelManager();
  await rejectsWith(mm.load(new URL('bad/truncated.safetensors', models)), ErrorCode.Io, 'a dropped connection rejects with Io');
  check(mm.state === 'failed' && mm.residentBytes === 0, 'failed, nothing held');
  await rejectsWith(mm.load(new URL('bad/missing.safetensors', models)), ErrorCode.MissingFile, 'a 404 rejects with MissingFile');
  await rejectsWith(mm.load(new URL('bad/short.safetensors', models)), ErrorCode.InvalidModel, 'a short Content-Length rejects with InvalidModel');
  await rejectsWith(
    mm.load(new URL('bad/stall.safetensors', models), { stallTimeout: 300 }),
    ErrorCode.Timeout,
    'a stalled server rejects with Timeout',
  );
  await mm.load(new URL('cached/model.safetensors', models));
  check(mm.state === 'ready', 'the manager is usable after each');
  await mm.close();
}

async function diffusers() {
  const mm = new ModelManager();
  const files = JSON.parse(params.get('sdFiles'));
  await mm.load({ baseUrl: new URL('sd/', models), files });
  check(mm.sampleSize === 64, 'a diffusers folder from a base URL: sample_size 64 from unet/config.json');
  const lease = mm.acquire();
  check(lease.tensorNames().includes('unet/conv_in.weight') && lease.tensor('unet/conv_in.weight').data[3] === 13, 'its tensors');
  lease.release();
  await mm.close();
}

async function worker() {
  const mm = new WorkerModelManager();
  await mm.ready;
  const ticks = [];
  const timer = setInterval(() => ticks.push(performance.now()), 1);
  const reports = [];
  const start = performance.now();
  await mm.load(new URL('worker/model.safetensors', models).href, { onProgress: (p) => reports.push(p) });
  const end = performance.now();
  clearInterval(timer);
  const marks = [start, ...ticks.filter((t) => t > start && t < end), end];
  let longest = 0;
  for (let i = 1; i < marks.length; i++) longest = Math.max(longest, marks[i] - marks[i - 1]);
  timings.workerLoadMs = Math.round(end - start);
  timings.workerTicks = marks.length - 2;
  timings.workerLongestPauseMs = +longest.toFixed(1);
  check(marks.length - 2 >= 3, `a 1 ms interval ticked ${marks.length - 2} times during a ${Math.round(end - start)} ms worker load`);
  // The longest pause is reported, not asserted (a shared machine's noise).
  check(mm.state === 'ready' && mm.residentBytes === bigData, 'the worker says ready, with the model resident');
  check(reports.length > 10 && monotonic(reports), `${reports.length} progress reports from the worker`);
  const lease = await mm.acquire();
  const { data } = await lease.tensor('t63');
  check(data instanceof Float32Array && data[5] === 63 * 262144 + 5, 'a tensor read from the worker');
  await lease.release();
  await mm.unload();
  check(mm.state === 'idle', 'unloaded in the worker');
  // An abort through the worker.
  const abort = new AbortController();
  const promise = mm.load(new URL('slow/model.safetensors', models).href, {
    signal: abort.signal,
    onProgress: (p) => p.bytesDone > MiB && abort.abort(),
  });
  await rejectsWith(promise, ErrorCode.Cancelled, 'an abort reaches the worker');
  // Bytes and a files object with a Blob go to the worker too.
  const small = new Uint8Array(await (await fetch(new URL('cached/model.safetensors', models))).arrayBuffer());
  await mm.load(small.buffer);
  check(mm.state === 'ready', 'an ArrayBuffer loads in the worker');
  await mm.load({ 'config.json': '{"sample_size": 9}', 'model.safetensors': new Blob([small]) });
  check(mm.sampleSize === 9, 'a files object with a Blob loads in the worker');
  // A folder at a base URL relative to the page (resolved before it is sent).
  await mm.load({ baseUrl: '/models/sd/', files: JSON.parse(params.get('sdFiles')) });
  check(mm.sampleSize === 64, 'a diffusers folder at a relative base URL loads in the worker');
  await mm.close();
}

async function main() {
  const t0 = performance.now();
  await init();
  const wasm = await initRaw(); // the instance init() made
  const memory = () => wasm.memory.buffer.byteLength;
  await big(memory);
  await abortMidDownload();
  await cached();
  await errors();
  await diffusers();
  await worker();
  timings.totalMs = Math.round(performance.now() - t0);
}

main().then(
  () => {
    window.__result = { ok: true, checks, timings };
  },
  (error) => {
    log.textContent += `FAILED: ${error?.stack ?? error}\n`;
    window.__result = { ok: false, checks, timings, failure: String(error?.stack ?? error) };
  },
);
