// Headless Chromium (Debian's package) through playwright-core, and reading the dashboard.
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_BIN)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30000,
    // playwright gives every launch a fresh user-data-dir.
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
}

/** A new page that fails the test on page errors and records every request it makes. */
export async function openPage(browser, { width = 1280, height = 900 } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  const errors = [];
  const requests = [];
  page.on('pageerror', (err) => errors.push(err.message));
  page.on('request', (request) => requests.push(request.url()));
  return { page, context, errors, requests };
}

/** The cards the dashboard shows, in order: `{key, id, status, label}`. */
export function cardsOnPage(page) {
  return page.$$eval('article.card[data-key]', (cards) =>
    cards.map((card) => ({
      key: card.dataset.key,
      id: card.dataset.id,
      status: card.dataset.status,
      label: card.querySelector('.status-text')?.textContent ?? '',
    })),
  );
}

/** The same view from a snapshot envelope. */
export function viewOfSnapshot(snapshot) {
  return snapshot.instances.map((i) => ({ key: i.key, id: i.id, status: i.state ?? i.status }));
}

export function sameView(cards, snapshot) {
  const a = cards.map(({ key, id, status }) => ({ key, id, status }));
  return JSON.stringify(a) === JSON.stringify(viewOfSnapshot(snapshot));
}

export function connectionState(page) {
  return page.$eval('#connection', (el) => ({ state: el.dataset.state, text: el.textContent.trim() }));
}
