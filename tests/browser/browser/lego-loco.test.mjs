// integrations/lego-loco/liveInstances.js in headless Chromium, the way the lego-loco
// frontend would run it: its page and modules come from the frontend's own origin, which
// proxies `/api` to the real gateway (`serve`, following `sim`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot, startGateway, startSimAndGateway, eventually, sleep } from '../lib/processes.mjs';
import { SERVICE, nineEndpoints, slice, createSlice, patchEndpoints, live } from '../lib/sim.mjs';
import { launchBrowser, openPage } from '../lib/browser.mjs';
import { streamBlockingProxy } from '../lib/proxy.mjs';

const TEST_TIMEOUT = 60000;
const JS = 'text/javascript; charset=utf-8';

let browser;
let workDir;

const watchdog = setTimeout(() => {
  console.error('lego-loco browser tests: watchdog expired after 140 s; exiting');
  process.exit(1);
}, 140000);
watchdog.unref();

before(async () => {
  browser = await launchBrowser();
  workDir = mkdtempSync(path.join(os.tmpdir(), 'loco-lego-'));
});

after(async () => {
  await browser?.close();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

// The frontend's page: it subscribes and keeps every envelope it is handed.
const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>lego-loco</title></head><body>
<script type="module">
  import { subscribe } from '/src/lib/liveInstances.js';
  window.envelopes = [];
  window.changes = [];
  window.unsubscribe = subscribe((envelope, change) => {
    window.envelopes.push(envelope);
    window.changes.push(change);
  }, { reopenDelayMs: [200, 1000] });
</script></body></html>`;

/** The lego-loco frontend's origin: its page and modules, `/api` proxied to the gateway. */
function frontend(t, gatewayUrl) {
  const integration = path.join(repoRoot, 'integrations/lego-loco');
  return streamBlockingProxy(t, gatewayUrl, {
    files: {
      '/': { body: PAGE, type: 'text/html; charset=utf-8' },
      '/src/lib/liveInstances.js': { file: path.join(integration, 'liveInstances.js'), type: JS },
      '/src/lib/discovery-client.js': { file: path.join(integration, 'discovery-client.js'), type: JS },
    },
  });
}

const latest = (page) => page.evaluate(() => window.envelopes.at(-1) ?? null);
const changeTypes = (page) => page.evaluate(() => window.changes.map((c) => c.type));
const connection = (page) => page.evaluate(() => window.changes.at(-1)?.state ?? null);

/** What the lego-loco hook reads of an envelope. */
function whatTheHookReads(envelope) {
  return {
    mode: envelope.mode,
    stats: envelope.stats,
    serviceName: envelope.serviceName,
    instances: envelope.instances.map((i) => ({
      id: i.id,
      name: i.name,
      status: i.status,
      ready: i.ready,
      provisioned: i.provisioned,
      details: i.health?.details,
    })),
  };
}

/** Waits until the gateway's `/live` shows `pod`'s status as `status` (a write to the
 * simulated API reaches the gateway through its watch, a moment after the write returns). */
function liveShows(gatewayUrl, pod, status, timeoutMs = 5000) {
  return eventually(async () => (await live(gatewayUrl)).instances[pod]?.status === status, {
    timeoutMs,
    what: `/live shows instance ${pod} ${status}`,
  });
}

/** Waits until the page's latest envelope reads like the gateway's `/live`. */
function sameAsLive(page, gatewayUrl, what, timeoutMs = 5000) {
  return eventually(async () => {
    const envelope = await latest(page);
    if (!envelope) return false;
    const expected = whatTheHookReads(await live(gatewayUrl));
    return JSON.stringify(whatTheHookReads(envelope)) === JSON.stringify(expected) && envelope;
  }, { timeoutMs, what });
}

test('liveInstances.js hands the hook the envelope of /live, and applies deltas', { timeout: TEST_TIMEOUT }, async (t) => {
  const { sim, gateway } = await startSimAndGateway(t, workDir);
  await createSlice(sim.url, slice(`${SERVICE}-lego1`, nineEndpoints()));
  const site = await frontend(t, gateway.url);
  const { page, context, errors, requests } = await openPage(browser);
  t.after(() => context.close());
  await page.goto(site.url + '/');

  const first = await sameAsLive(page, gateway.url, 'first envelope equals /live');
  assert.equal(first.mode, 'kubernetes-endpointslices');
  assert.ok(first.mode.includes('kubernetes'), 'the frontend tests mode.includes("kubernetes")');
  assert.equal(first.serviceName, SERVICE);
  assert.deepEqual(first.stats, { total: 9, ready: 9, degraded: 0, notReady: 0 });
  assert.ok(Date.now() - Date.parse(first.lastUpdate) < 40000, 'lastUpdate is recent (their e2e test asks < 40 s)');
  assert.deepEqual(first.instances.map((i) => i.id), Array.from({ length: 9 }, (_, n) => `instance-${n}`));
  const card = first.instances[0];
  assert.equal(card.name, 'Windows 98 - Game Server');
  assert.equal(card.status, 'ready');
  assert.equal(card.ready, true);
  assert.equal(card.provisioned, true);
  assert.equal(card.health.details, 'serving');
  await eventually(async () => (await connection(page)) === 'live', { what: 'the stream is live' });

  // Deltas: pod 4 stops serving, then terminates; each lands in a new envelope.
  const polls = () => requests.filter((u) => u.includes('/api/instances/live')).length;
  const pollsBefore = polls();
  await patchEndpoints(sim.url, `${SERVICE}-lego1`, nineEndpoints({ 4: { serving: false } }));
  await liveShows(gateway.url, 4, 'booting');
  let envelope = await sameAsLive(page, gateway.url, 'pod 4 booting', 3000);
  const four = envelope.instances[4];
  assert.deepEqual([four.status, four.ready, four.health.details], ['booting', false, 'not serving']);
  assert.deepEqual(envelope.stats, { total: 9, ready: 8, degraded: 0, notReady: 1 });
  await patchEndpoints(sim.url, `${SERVICE}-lego1`, nineEndpoints({ 4: { serving: false, terminating: true } }));
  await liveShows(gateway.url, 4, 'degraded');
  envelope = await sameAsLive(page, gateway.url, 'pod 4 terminating', 3000);
  assert.deepEqual(
    [envelope.instances[4].status, envelope.instances[4].state, envelope.instances[4].health.details],
    ['degraded', 'offline', 'terminating'],
    'a card word the frontend knows, its details underneath',
  );
  assert.ok((await changeTypes(page)).includes('InstanceNotReady'), 'applied from deltas');
  assert.equal(polls(), pollsBefore, 'no polling while the stream is live');
  assert.deepEqual(errors, []);
  await page.evaluate(() => window.unsubscribe());
});

test('liveInstances.js: a gateway that cannot resume sends reset, and the envelope follows', { timeout: TEST_TIMEOUT }, async (t) => {
  const { sim, gateway } = await startSimAndGateway(t, workDir);
  await createSlice(sim.url, slice(`${SERVICE}-lego2`, nineEndpoints()));
  const site = await frontend(t, gateway.url);
  const { page, context, errors } = await openPage(browser);
  t.after(() => context.close());
  await page.goto(site.url + '/');
  await sameAsLive(page, gateway.url, 'first envelope');
  await eventually(async () => (await connection(page)) === 'live', { what: 'live' });

  // A new gateway process on the same address knows none of the old ids: the client
  // resumes with its Last-Event-ID and gets a reset with the current view.
  const listen = new URL(gateway.url).host;
  await gateway.stop();
  await patchEndpoints(sim.url, `${SERVICE}-lego2`, nineEndpoints({ 7: { serving: false } }).slice(0, 8));
  const restarted = await startGateway(sim.kubeconfig, { listen });
  t.after(() => restarted.stop());
  // (The polling may show the new view first; the stream's reset follows.)
  await eventually(async () => (await changeTypes(page)).includes('reset'), {
    timeoutMs: 20000,
    what: 'a reset arrives on the resumed stream',
  });
  const envelope = await sameAsLive(page, restarted.url, 'the envelope after the reset');
  assert.equal(envelope.instances.length, 8);
  assert.equal(envelope.instances[7].status, 'booting');
  assert.equal(await connection(page), 'live');
  assert.deepEqual(errors, []);
});

test('liveInstances.js: stream down → polling /live every 5 s → stream back', { timeout: TEST_TIMEOUT }, async (t) => {
  const { sim, gateway } = await startSimAndGateway(t, workDir);
  await createSlice(sim.url, slice(`${SERVICE}-lego3`, nineEndpoints()));
  const site = await frontend(t, gateway.url);
  const { page, context, errors, requests } = await openPage(browser);
  t.after(() => context.close());
  await page.goto(site.url + '/');
  await sameAsLive(page, gateway.url, 'first envelope');
  await eventually(async () => (await connection(page)) === 'live', { what: 'live' });

  site.blockStream();
  const downAt = Date.now();
  await patchEndpoints(sim.url, `${SERVICE}-lego3`, nineEndpoints({ 6: { serving: false } }));
  await liveShows(gateway.url, 6, 'booting');
  const envelope = await sameAsLive(page, gateway.url, 'the change arrives by polling /live', 8000);
  assert.equal(envelope.instances[6].status, 'booting');
  assert.equal(await connection(page), 'fallback');
  console.log(`# polled snapshot shown ${Date.now() - downAt} ms after the stream went down`);
  const polled = requests.filter((u) => u.includes('/api/instances/live')).length;
  await sleep(5500);
  assert.ok(
    requests.filter((u) => u.includes('/api/instances/live')).length > polled,
    'it keeps polling every 5 s while the stream is down',
  );

  site.unblockStream();
  await eventually(async () => (await connection(page)) === 'live', { timeoutMs: 20000, what: 'the stream is back' });
  const pollsWhenLive = requests.filter((u) => u.includes('/api/instances/live')).length;
  await patchEndpoints(sim.url, `${SERVICE}-lego3`, nineEndpoints());
  await liveShows(gateway.url, 6, 'ready');
  await sameAsLive(page, gateway.url, 'deltas flow again', 3000);
  await sleep(5500);
  assert.equal(
    requests.filter((u) => u.includes('/api/instances/live')).length,
    pollsWhenLive,
    'polling stopped once the stream was back',
  );
  assert.deepEqual(errors, []);
});
