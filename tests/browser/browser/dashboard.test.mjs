// The dashboard and discovery-client.js in headless Chromium, against the real binaries:
// `demo`, and `sim` + `serve` written to over the simulated Kubernetes API.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot, startDemo, startGateway, startSimAndGateway, freePort, eventually, sleep } from '../lib/processes.mjs';
import { SERVICE, endpoint, nineEndpoints, slice, createSlice, patchEndpoints, deleteSlice, live } from '../lib/sim.mjs';
import { launchBrowser, openPage, cardsOnPage, sameView, connectionState } from '../lib/browser.mjs';
import { streamBlockingProxy } from '../lib/proxy.mjs';

const outputDir = path.resolve(repoRoot, process.env.CI_OUTPUT_DIR || 'target/ci-output');
const TEST_TIMEOUT = 60000;

let browser;
let workDir;

// Whatever happens, the run ends by itself.
const watchdog = setTimeout(() => {
  console.error('browser tests: watchdog expired after 170 s; exiting');
  process.exit(1);
}, 170000);
watchdog.unref();

before(async () => {
  browser = await launchBrowser();
  workDir = mkdtempSync(path.join(os.tmpdir(), 'loco-dash-'));
  mkdirSync(outputDir, { recursive: true });
});

after(async () => {
  await browser?.close();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

/** Starts a sim and a gateway following it; `t.after` stops both by PID. */
function simAndGateway(t, options = {}) {
  return startSimAndGateway(t, workDir, options);
}

async function expectCardsMatchLive(page, gatewayUrl, what, timeoutMs = 5000) {
  return eventually(async () => sameView(await cardsOnPage(page), await live(gatewayUrl)), { timeoutMs, what });
}

/** Resolves with Date.now() in the page when the card of `key` first shows `status`. */
function watchCard(page, key, status) {
  return page.evaluate(
    ([key, status]) =>
      new Promise((resolve) => {
        const seen = () => document.querySelector(`article.card[data-key="${CSS.escape(key)}"]`)?.dataset.status === status;
        if (seen()) return resolve(Date.now());
        const observer = new MutationObserver(() => {
          if (seen()) {
            observer.disconnect();
            resolve(Date.now());
          }
        });
        observer.observe(document.body, { subtree: true, childList: true, attributes: true });
      }),
    [key, status],
  );
}

test('the demo renders its instances from the stream', { timeout: TEST_TIMEOUT }, async (t) => {
  const demo = await startDemo({ pace: '200ms' });
  t.after(() => demo.stop());
  const { page, context, errors, requests } = await openPage(browser);
  t.after(() => context.close());

  await page.goto(demo.url + '/');
  await eventually(async () => (await connectionState(page)).state === 'live', { what: 'the stream goes live' });
  assert.ok(requests.some((u) => u.includes('/api/instances/stream')), 'the page opened the event stream');

  // The demo opens on its StatefulSet up: nine ready pods.
  await eventually(async () => {
    const cards = await cardsOnPage(page);
    return cards.length === 9 && cards.every((c) => c.status === 'ready');
  }, { timeoutMs: 5000, what: 'nine ready pods shown' });

  // Then the story plays; the page follows through deltas (the event log fills).
  await eventually(async () => (await page.$$('.log-entry[data-type^="Instance"]')).length >= 3, {
    timeoutMs: 10000,
    what: 'deltas arrive in the event log',
  });
  await expectCardsMatchLive(page, demo.url, 'cards match /api/instances/live', 10000);

  const header = await page.$eval('#mode', (el) => el.textContent.replace(/\s+/g, ' ').trim());
  assert.match(header, /^Auto-Discovery: kubernetes-endpointslices \(\d+ pods\)$/);
  const cards = await cardsOnPage(page);
  const ordinals = cards.map((c) => Number(c.id.replace('instance-', '')));
  assert.deepEqual(ordinals, [...ordinals].sort((a, b) => a - b), 'ordinal order');
  for (const card of cards) assert.ok(card.label.length > 0, `${card.id} has a status text, not only a colour`);
  const latency = await page.$eval('#latency', (el) => el.textContent);
  assert.match(latency, /^\d+(\.\d)? m?s$/, 'a discovery latency is shown');
  const foreign = requests.filter((u) => !u.startsWith(demo.url) && !u.startsWith('data:'));
  assert.deepEqual(foreign, [], 'no request leaves the gateway (works offline)');

  // Screenshots: desktop, and a phone (375 px) that must not scroll sideways.
  await page.waitForTimeout(300);
  const shot = path.join(outputDir, 'dashboard.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(statSync(shot).size > 10000, 'screenshot written');
  await page.setViewportSize({ width: 375, height: 800 });
  await page.waitForTimeout(200);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scroll at 375 px (overflow ${overflow} px)`);
  await page.screenshot({ path: path.join(outputDir, 'dashboard-375.png'), fullPage: true });
  console.log(`# screenshots: ${shot}, ${path.join(outputDir, 'dashboard-375.png')}`);
  assert.deepEqual(errors, []);
});

test('a serving=false patch changes its card within one second', { timeout: TEST_TIMEOUT }, async (t) => {
  const { sim, gateway } = await simAndGateway(t);
  await createSlice(sim.url, slice(`${SERVICE}-abcde`, nineEndpoints()));
  const { page, context, errors } = await openPage(browser);
  t.after(() => context.close());
  await page.goto(gateway.url + '/');
  await eventually(async () => {
    const cards = await cardsOnPage(page);
    return cards.length === 9 && cards.every((c) => c.status === 'ready');
  }, { what: 'nine ready cards' });
  assert.equal((await connectionState(page)).state, 'live');

  const key = `loco/${SERVICE}/${SERVICE}-4`;
  const steps = [
    { change: { serving: false }, status: 'booting', label: 'Booting' },
    { change: {}, status: 'ready', label: 'Ready' },
    { change: { serving: false, terminating: true }, status: 'offline', label: 'Offline' },
  ];
  const timings = [];
  for (const step of steps) {
    const shown = watchCard(page, key, step.status);
    const sent = Date.now();
    await patchEndpoints(sim.url, `${SERVICE}-abcde`, nineEndpoints({ 4: step.change }));
    const at = await Promise.race([shown, sleep(5000).then(() => null)]);
    assert.ok(at !== null, `card of pod 4 never showed ${step.status}`);
    const ms = at - sent;
    timings.push(ms);
    console.log(`# patch ${JSON.stringify(step.change)} -> card shows "${step.label}" after ${ms} ms`);
    assert.ok(ms < 1000, `card changed after ${ms} ms, not within one second`);
    const card = (await cardsOnPage(page)).find((c) => c.key === key);
    assert.equal(card.label, step.label, 'the status is also written out');
  }
  console.log(`# serving=false to card: ${timings[0]} ms (all: ${timings.join(', ')} ms)`);
  const log = await page.$$eval('.log-entry', (items) => items.map((li) => li.textContent));
  assert.ok(log.some((line) => line.includes('InstanceNotReady') && line.includes('Client 4')), 'the change is in the event log');
  assert.deepEqual(errors, []);
});

test('a gateway restart shows reconnecting, then converges to the right state', { timeout: TEST_TIMEOUT }, async (t) => {
  const port = await freePort();
  const listen = `127.0.0.1:${port}`;
  const { sim, gateway } = await simAndGateway(t, { listen });
  await createSlice(sim.url, slice(`${SERVICE}-fghij`, nineEndpoints()));
  const { page, context, errors } = await openPage(browser);
  t.after(() => context.close());
  await page.goto(gateway.url + '/');
  await expectCardsMatchLive(page, gateway.url, 'first paint matches /live');
  await eventually(async () => (await connectionState(page)).state === 'live', { what: 'live' });

  await gateway.stop();
  const down = await eventually(async () => {
    const c = await connectionState(page);
    return c.state === 'reconnecting' && c;
  }, { what: 'the page shows reconnecting' });
  assert.match(down.text, /Reconnecting/);

  // While the gateway is away the cluster changes: pod 2 stops serving, pod 8 goes away.
  const changed = nineEndpoints({ 2: { serving: false } }).slice(0, 8);
  await patchEndpoints(sim.url, `${SERVICE}-fghij`, changed);
  await sleep(500);
  assert.equal((await connectionState(page)).state, 'reconnecting', 'still reconnecting while the gateway is down');

  const restarted = await startGateway(sim.kubeconfig, { listen });
  t.after(() => restarted.stop());
  const started = Date.now();
  await eventually(async () => (await connectionState(page)).state === 'live', { timeoutMs: 20000, what: 'live again' });
  await expectCardsMatchLive(page, restarted.url, 'cards match the restarted gateway', 5000);
  console.log(`# live again ${Date.now() - started} ms after the restart`);
  const cards = await cardsOnPage(page);
  assert.equal(cards.length, 8);
  assert.equal(cards.find((c) => c.id === 'instance-2').status, 'booting');
  const emptySlot = await page.$eval('.card-empty[data-slot="8"] .name', (el) => el.textContent);
  assert.equal(emptySlot, 'Empty slot', 'slot 8 stays on the grid, empty');
  assert.deepEqual(errors, []);
});

test('with the stream refused, the page falls back to polling the snapshot', { timeout: TEST_TIMEOUT }, async (t) => {
  const { sim, gateway } = await simAndGateway(t);
  await createSlice(sim.url, slice(`${SERVICE}-klmno`, nineEndpoints()));
  const proxy = await streamBlockingProxy(t, gateway.url);
  const { page, context } = await openPage(browser);
  t.after(() => context.close());
  await page.goto(proxy.url + '/');
  await expectCardsMatchLive(page, gateway.url, 'first paint');
  await eventually(async () => (await connectionState(page)).state === 'live', { what: 'live' });

  proxy.blockStream();
  await eventually(async () => (await connectionState(page)).state === 'reconnecting', { what: 'reconnecting' });
  await patchEndpoints(sim.url, `${SERVICE}-klmno`, nineEndpoints({ 6: { serving: false } }));
  const fallback = await eventually(async () => {
    const c = await connectionState(page);
    return c.state === 'fallback' && c;
  }, { timeoutMs: 8000, what: 'snapshot fallback' });
  assert.match(fallback.text, /Snapshot fallback/);
  await expectCardsMatchLive(page, gateway.url, 'the polled snapshot is shown', 7000);
  assert.equal((await cardsOnPage(page)).find((c) => c.id === 'instance-6').status, 'booting');

  proxy.unblockStream();
  await eventually(async () => (await connectionState(page)).state === 'live', { timeoutMs: 40000, what: 'live again' });
  await patchEndpoints(sim.url, `${SERVICE}-klmno`, nineEndpoints());
  await expectCardsMatchLive(page, gateway.url, 'deltas flow again', 3000);
});

// ---- discovery-client.js in the browser ------------------------------------------------

/** A small seeded random generator, so a failing churn replays the same. */
function random(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

test('discovery-client.js: its Map equals /api/instances/live after churn', { timeout: TEST_TIMEOUT }, async (t) => {
  const canary = 'loco-loco-canary';
  const services = [SERVICE, canary];
  const { sim, gateway } = await simAndGateway(t, { services });
  const { page, context, errors } = await openPage(browser);
  t.after(() => context.close());
  await page.goto(gateway.url + '/healthz');

  const views = {
    all: { services },
    canary: { services: [canary] },
    zoneB: { zone: 'zone-b' },
    notReady: { status: ['booting', 'offline'] },
  };
  await page.evaluate(async (views) => {
    const client = await import('/discovery-client.js');
    window.subs = {};
    window.seen = {};
    for (const [name, filters] of Object.entries(views)) {
      window.seen[name] = [];
      window.subs[name] = client.subscribe({ ...filters, fallbackIntervalMs: 1000 }, (_map, change) => {
        window.seen[name].push(change.type);
      });
    }
  }, views);
  await eventually(() => page.evaluate(() => Object.values(window.subs).every((s) => s.state === 'live')), { what: 'all live' });

  // Churn: two slices per service (pods 0-4 and 5-8), random changes, moves between
  // slices, deletes and re-creates.
  const rand = random(1998);
  const pick = (list) => list[Math.floor(rand() * list.length)];
  const desired = new Map(); // slice name -> { service, endpoints: Map<ordinal, options> }
  for (const service of services) {
    for (const [part, ordinals] of [['a', [0, 1, 2, 3, 4]], ['b', [5, 6, 7, 8]]]) {
      const name = `${service}-${part}`;
      desired.set(name, { service, endpoints: new Map(ordinals.map((n) => [n, { service }])), exists: false });
    }
  }
  const write = async (name) => {
    const entry = desired.get(name);
    const endpoints = [...entry.endpoints].map(([n, o]) => endpoint(n, o));
    if (!entry.exists) {
      await createSlice(sim.url, slice(name, endpoints, { service: entry.service }));
      entry.exists = true;
    } else {
      await patchEndpoints(sim.url, name, endpoints);
    }
  };
  for (const name of desired.keys()) await write(name);

  let operations = 0;
  for (let step = 0; step < 70; step++) {
    const name = pick([...desired.keys()]);
    const entry = desired.get(name);
    const roll = rand();
    if (step === 35) {
      // The client closes and reopens its EventSource itself: it must resume, not reset.
      await page.evaluate(() => {
        window.resumeMark = window.seen.all.length;
        window.subs.all.reconnect();
      });
    }
    if (roll < 0.06 && entry.exists) {
      await deleteSlice(sim.url, name);
      entry.exists = false;
    } else if (!entry.exists) {
      await write(name);
    } else if (roll < 0.12 && entry.endpoints.size > 0) {
      // Move one endpoint to the other slice of the same service.
      const [ordinal, options] = [...entry.endpoints][0];
      const other = [...desired].find(([n, e]) => e.service === entry.service && n !== name && e.exists);
      if (other) {
        entry.endpoints.delete(ordinal);
        other[1].endpoints.set(ordinal, options);
        await write(other[0]);
        await write(name);
      }
    } else if (roll < 0.2 && entry.endpoints.size > 0) {
      entry.endpoints.delete(pick([...entry.endpoints.keys()]));
      await write(name);
    } else if (roll < 0.28) {
      const ordinal = Math.floor(rand() * 12);
      if (![...desired.values()].some((e) => e.service === entry.service && e.endpoints.has(ordinal))) {
        entry.endpoints.set(ordinal, { service: entry.service, serving: rand() < 0.5 });
        await write(name);
      }
    } else if (entry.endpoints.size > 0) {
      const ordinal = pick([...entry.endpoints.keys()]);
      const options = entry.endpoints.get(ordinal);
      const what = rand();
      if (what < 0.45) options.serving = !(options.serving ?? true);
      else if (what < 0.6) options.terminating = !options.terminating;
      else if (what < 0.75) options.zone = pick(['zone-a', 'zone-b', 'zone-c']);
      else if (what < 0.9) options.ip = `10.250.${Math.floor(rand() * 200)}.${Math.floor(rand() * 200)}`;
      else options.node = pick(['loco-node-0', 'loco-node-1', 'loco-node-2']);
      await write(name);
    }
    operations++;
    await sleep(Math.floor(rand() * 40));
  }

  const queries = {
    all: `?service=${services.join(',')}`,
    canary: `?service=${canary}`,
    zoneB: '?zone=zone-b',
    notReady: '?status=booting,offline',
  };
  const canonical = (instances) => JSON.stringify([...instances].sort((a, b) => (a.key < b.key ? -1 : 1)));
  for (const [name, query] of Object.entries(queries)) {
    await eventually(async () => {
      const expected = canonical((await live(gateway.url, query)).instances);
      const actual = await page.evaluate((name) => JSON.stringify([...window.subs[name].instances.values()].sort((a, b) => (a.key < b.key ? -1 : 1))), name);
      return actual === expected;
    }, { timeoutMs: 5000, what: `the "${name}" Map equals /live${query}` });
  }
  const total = (await live(gateway.url, queries.all)).instances.length;
  const afterResume = await page.evaluate(() => window.seen.all.slice(window.resumeMark));
  assert.ok(!afterResume.includes('snapshot') && !afterResume.includes('reset'), `resumed without a reset: ${afterResume.join(' ')}`);
  assert.ok(afterResume.some((type) => type.startsWith('Instance')), 'deltas arrived after the resume');
  const counts = await page.evaluate(() => Object.fromEntries(Object.entries(window.seen).map(([k, v]) => [k, v.length])));
  console.log(`# churn: ${operations} writes; ${total} instances at the end; events seen per subscription ${JSON.stringify(counts)}`);
  await page.evaluate(() => Object.values(window.subs).forEach((s) => s.close()));
  assert.deepEqual(errors, []);
});
