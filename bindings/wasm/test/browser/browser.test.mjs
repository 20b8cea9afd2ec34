// Runs the browser pages in headless Chromium (Debian's, driven by
// playwright-core) against a local server on 127.0.0.1, and fails unless
// each page reports success and logs no error:
// - test/browser/page.js: the lifecycle on models in memory;
// - test/browser/stream.js: models streamed from the server's /models/
//   (test/model-server.mjs): progress and peak wasm memory for 64 MiB, an
//   abort, the Cache API, errors, a diffusers folder, a Web Worker.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

import { serve } from './server.mjs';
import { models } from '../model-server.mjs';
import { f32Model, diffusersPipeline } from '../fixtures.js';

const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';

const registry = models();
let server;
let context;
let profile;

before(async () => {
  assert.ok(existsSync(executablePath), `${executablePath} is missing (apt-get install chromium)`);
  server = await serve(registry);
  profile = await mkdtemp(join(tmpdir(), 'mm-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  await context?.close();
  await server?.close();
  if (profile) await rm(profile, { recursive: true, force: true });
});

/** Open `path` in a new page, wait for `window.__result`, check it. */
async function runPage(t, path, minChecks) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  page.on('console', (message) => {
    // The browser logs each failed request; those the test makes on purpose
    // (under /models/bad/) are expected.
    const expected =
      message.text().startsWith('Failed to load resource') && message.location().url.includes('/models/bad/');
    if (message.type() === 'error' && !expected) errors.push(message.text());
  });
  const started = Date.now();
  await page.goto(`${server.url}${path}`);
  await page.waitForFunction(() => window.__result !== undefined, null, { timeout: 150_000 });
  const result = await page.evaluate(() => window.__result);
  const took = Date.now() - started;
  for (const check of result.checks) t.diagnostic(`ok - ${check}`);
  t.diagnostic(`page timings: ${JSON.stringify(result.timings)}; page total ${took} ms`);
  await page.close();
  assert.equal(result.failure, undefined);
  assert.equal(result.ok, true);
  assert.ok(result.checks.length >= minChecks, `only ${result.checks.length} checks ran`);
  assert.deepEqual(errors, [], 'the page logged errors');
  return result;
}

test('the lifecycle runs in headless Chromium', { timeout: 120_000 }, async (t) => {
  await runPage(t, 'test/browser/index.html', 20);
});

test('models stream from a server in headless Chromium', { timeout: 180_000 }, async (t) => {
  const big = f32Model(64, 1 << 18); // 64 tensors of 1 MiB: 64 MiB of data
  registry.put('big/model.safetensors', big, { chunk: 256 << 10 });
  registry.put('worker/model.safetensors', big, { chunk: 256 << 10 });
  registry.put('slow/model.safetensors', f32Model(16, 1 << 16), { mode: 'slow', delayMs: 10 });
  const small = f32Model(2, 4096);
  registry.put('cached/model.safetensors', small);
  registry.put('bad/truncated.safetensors', f32Model(4, 1 << 16), { mode: 'truncate' });
  registry.put('bad/short.safetensors', small, { mode: 'short-length' });
  registry.put('bad/stall.safetensors', f32Model(4, 1 << 16), { mode: 'stall' });
  const sd = diffusersPipeline();
  for (const [name, bytes] of Object.entries(sd)) registry.put(`sd/${name}`, bytes);
  const query = new URLSearchParams({
    bigBytes: String(big.length),
    bigData: String(64 << 20),
    sdFiles: JSON.stringify(Object.keys(sd)),
  });
  await runPage(t, `test/browser/stream.html?${query}`, 25);
});
