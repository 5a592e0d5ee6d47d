// Access control in headless Chromium against the real binary (`demo`): the dashboard under
// its Content-Security-Policy, a token passed in the URL fragment, and the README's
// cross-origin example served by a second static server on another loopback port.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { start, eventually } from '../lib/processes.mjs';
import { launchBrowser, openPage, cardsOnPage, connectionState } from '../lib/browser.mjs';

const TEST_TIMEOUT = 60000;
const TOKEN = 'browser-test-token';

let browser;
let workDir;

const watchdog = setTimeout(() => {
  console.error('access browser tests: watchdog expired after 150 s; exiting');
  process.exit(1);
}, 150000);
watchdog.unref();

before(async () => {
  browser = await launchBrowser();
  workDir = mkdtempSync(path.join(os.tmpdir(), 'loco-access-'));
  writeFileSync(path.join(workDir, 'tokens'), `# browser tests\n${TOKEN}\n`);
});

after(async () => {
  await browser?.close();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

/** `demo` with extra flags; `t.after` stops it by PID. */
async function demo(t, extra = []) {
  const gateway = await start(['demo', '--listen', '127.0.0.1:0', '--pace', '300ms', ...extra], {
    marker: /loco-discovery demo: open/,
    name: 'demo',
  });
  t.after(() => gateway.stop());
  return gateway;
}

/** Console messages of `page` that report a CSP violation. */
function cspViolations(page) {
  const seen = [];
  page.on('console', (message) => {
    if (/Content Security Policy|Refused to/i.test(message.text())) seen.push(message.text());
  });
  return seen;
}

/** A static server on a free loopback port serving `html` at `/`; `t.after` closes it. */
async function otherOrigin(t, html) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(html);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => {
    server.closeAllConnections();
    server.close(resolve);
  }));
  return `http://127.0.0.1:${server.address().port}`;
}

test('the dashboard works under its CSP with no violation', { timeout: TEST_TIMEOUT }, async (t) => {
  const gateway = await demo(t);
  const { page, context, errors } = await openPage(browser);
  t.after(() => context.close());
  const violations = cspViolations(page);
  const response = await page.goto(gateway.url + '/');
  const csp = response.headers()['content-security-policy'];
  assert.match(csp, /frame-ancestors 'none'/);
  assert.equal(response.headers()['referrer-policy'], 'no-referrer');
  await eventually(async () => (await connectionState(page)).state === 'live', { what: 'the stream goes live' });
  await eventually(async () => (await cardsOnPage(page)).length === 9, { what: 'nine cards' });
  await page.waitForTimeout(500);
  assert.deepEqual(violations, [], 'no CSP violation in the console');
  assert.deepEqual(errors, [], 'no page error');
});

test('with tokens on, the dashboard streams with #access_token= and not without', { timeout: TEST_TIMEOUT }, async (t) => {
  const gateway = await demo(t, ['--auth-tokens-file', path.join(workDir, 'tokens')]);
  const { page, context, requests } = await openPage(browser);
  t.after(() => context.close());
  await page.goto(`${gateway.url}/#access_token=${TOKEN}`);
  await eventually(async () => (await connectionState(page)).state === 'live', { what: 'the stream goes live with the token' });
  await eventually(async () => (await cardsOnPage(page)).length === 9, { what: 'nine cards' });
  const stream = requests.find((u) => u.includes('/api/instances/stream'));
  assert.ok(new URL(stream).searchParams.get('access_token') === TOKEN, 'the stream carries access_token');

  const anonymous = await openPage(browser);
  t.after(() => anonymous.context.close());
  await anonymous.page.goto(`${gateway.url}/`);
  await anonymous.page.waitForTimeout(1500);
  assert.notEqual((await connectionState(anonymous.page)).state, 'live', 'no stream without a token');
  assert.equal((await cardsOnPage(anonymous.page)).length, 0);
});

/** The README's cross-origin example, pointed at `gatewayUrl`. */
function crossOriginPage(gatewayUrl, token) {
  return `<!doctype html><meta charset="utf-8"><title>other origin</title>
<pre id="out">waiting</pre>
<script type="module">
import { subscribe, sortInstances } from '${gatewayUrl}/discovery-client.js';

const subscription = subscribe(
  { baseUrl: '${gatewayUrl}', token: '${token}' },
  (instances, change) => {
    document.getElementById('out').textContent =
      change.state + ' ' + sortInstances(instances).length;
  },
);
window.subscription = subscription;
</script>`;
}

test("the README's cross-origin example works from an allowed origin only", { timeout: TEST_TIMEOUT }, async (t) => {
  // Two pages on other ports: the allowed one is known only after it listens.
  let allowedHtml = '';
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(allowedHtml);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => {
    server.closeAllConnections();
    server.close(resolve);
  }));
  const allowed = `http://127.0.0.1:${server.address().port}`;
  const gateway = await demo(t, [
    '--auth-tokens-file', path.join(workDir, 'tokens'),
    '--cors-allow-origin', allowed,
  ]);
  allowedHtml = crossOriginPage(gateway.url, TOKEN);
  const { page, context, errors } = await openPage(browser);
  t.after(() => context.close());
  await page.goto(allowed + '/');
  await eventually(async () => /^live 9$/.test(await page.$eval('#out', (el) => el.textContent)), {
    timeoutMs: 10000,
    what: 'the other origin streams nine instances',
  });
  assert.deepEqual(errors, []);

  const refused = await otherOrigin(t, crossOriginPage(gateway.url, TOKEN));
  const other = await openPage(browser);
  t.after(() => other.context.close());
  await other.page.goto(refused + '/');
  await other.page.waitForTimeout(1500);
  const text = await other.page.$eval('#out', (el) => el.textContent);
  assert.ok(!/^live/.test(text), `a refused origin gets nothing: ${text}`);
});
