// Runs test/browser/page.js in headless Chromium (Debian's, driven by
// playwright-core) against a local static server, and fails unless the page
// reports success.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

import { serve } from './server.mjs';

const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';

test('the lifecycle runs in headless Chromium', { timeout: 120_000 }, async (t) => {
  assert.ok(existsSync(executablePath), `${executablePath} is missing (apt-get install chromium)`);
  const server = await serve();
  const profile = await mkdtemp(join(tmpdir(), 'mm-chromium-'));
  t.after(async () => {
    await server.close();
    await rm(profile, { recursive: true, force: true });
  });
  const context = await chromium.launchPersistentContext(profile, {
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
  t.after(() => context.close());
  const page = context.pages()[0] ?? (await context.newPage());
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(message.text());
  });
  const started = Date.now();
  await page.goto(`${server.url}test/browser/index.html`);
  await page.waitForFunction(() => window.__result !== undefined, null, { timeout: 90_000 });
  const result = await page.evaluate(() => window.__result);
  const took = Date.now() - started;
  for (const check of result.checks) t.diagnostic(`ok - ${check}`);
  t.diagnostic(`page timings: ${JSON.stringify(result.timings)}; page total ${took} ms`);
  assert.equal(result.failure, undefined);
  assert.equal(result.ok, true);
  assert.ok(result.checks.length >= 20, `only ${result.checks.length} checks ran`);
  assert.deepEqual(errors, [], 'the page logged errors');
});
