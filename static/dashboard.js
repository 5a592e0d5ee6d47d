// The dashboard: the lego-loco instance grid, live from the gateway's event stream.
import { subscribe, tokenFromFragment } from './discovery-client.js';
import { slotsByService } from './grid.js';

const LOG_SIZE = 12;

const STATUS = {
  ready: { label: 'Ready', tone: 'ok', icon: '✓', ready: true },
  running: { label: 'Running', tone: 'ok', icon: '✓', ready: true },
  degraded: { label: 'Degraded', tone: 'warn', icon: '!' },
  booting: { label: 'Booting', tone: 'busy', icon: '◔' },
  connecting: { label: 'Connecting', tone: 'busy', icon: '◔' },
  offline: { label: 'Offline', tone: 'off', icon: '✕' },
  error: { label: 'Error', tone: 'bad', icon: '✕' },
  unknown: { label: 'Unknown', tone: 'off', icon: '?' },
};

const CONNECTION = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  fallback: 'Snapshot fallback',
  closed: 'Closed',
};

const $ = (id) => document.getElementById(id);

function statusInfo(word) {
  return STATUS[word] ?? STATUS.unknown;
}

/** `state` is the gateway's word; `status` is the lego-loco card word (and the only one older gateways send). */
function stateOf(instance) {
  return instance.state ?? instance.status;
}

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'text') el.textContent = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function formatAge(ms) {
  if (!Number.isFinite(ms) || ms < 0) ms = 0;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d`;
}

function formatLatency(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

function clock(date) {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}

function shortName(instance) {
  if (!instance) return '?';
  return instance.name?.replace(/^Windows 98 - /, '') ?? instance.podName ?? instance.id;
}

// ---- the grid -------------------------------------------------------------------------

function portsList(ports) {
  // The VNC port first: it is the one a viewer connects to.
  const entries = Object.entries(ports ?? {}).sort(([a], [b]) => (a === 'vnc' ? -1 : b === 'vnc' ? 1 : a < b ? -1 : 1));
  if (!entries.length) return '—';
  const list = document.createDocumentFragment();
  entries.forEach(([name, port], n) => {
    if (n) list.append(' ');
    list.append(h('span', { class: 'port', text: `${name} ${port}` }));
  });
  return list;
}

function fact(label, value, cls) {
  const dd = value instanceof Node ? h('dd', {}, value) : h('dd', { text: value ?? '—' });
  return h('div', { class: cls }, h('dt', { text: label }), dd);
}

function cardSignature(slot) {
  const i = slot.instance;
  if (!i) return `empty:${slot.ordinal}`;
  return JSON.stringify([
    i.name, stateOf(i), i.podName, i.addresses?.podIP, i.kubernetes?.nodeName,
    i.kubernetes?.zone, i.ports, i.health?.lastTransition, i.health?.details, slot.ordinal,
  ]);
}

function renderCard(slot) {
  const i = slot.instance;
  if (!i) {
    return h('div', { class: 'card card-empty', 'data-slot': slot.ordinal },
      h('div', { class: 'card-head' },
        h('span', { class: 'ordinal', text: `#${slot.ordinal}` }),
        h('h3', { class: 'name', text: 'Empty slot' })),
      h('p', { class: 'empty-text', text: `instance-${slot.ordinal} is not running` }));
  }
  const info = statusInfo(stateOf(i));
  const titleId = `t-${i.key.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  return h('article', {
    class: `card tone-${info.tone}`,
    'data-key': i.key,
    'data-id': i.id,
    'data-status': stateOf(i),
    'aria-labelledby': titleId,
  },
  h('div', { class: 'card-head' },
    h('span', { class: 'ordinal', text: Number.isInteger(i.ordinal) ? `#${i.ordinal}` : '#–' }),
    h('h3', { class: 'name', id: titleId, text: i.name ?? i.podName ?? i.id })),
  h('p', { class: 'status-line' },
    h('span', { class: `badge tone-${info.tone}`, title: i.health?.details ?? '' },
      h('span', { class: 'badge-icon', 'aria-hidden': 'true', text: info.icon }),
      h('span', { class: 'status-text', text: info.label })),
    h('span', { class: 'since' },
      'for ',
      h('time', {
        'data-since': i.health?.lastTransition ?? '',
        datetime: i.health?.lastTransition ?? '',
        title: i.health?.lastTransition ? `since ${i.health.lastTransition}` : '',
        text: i.health?.lastTransition ? formatAge(Date.now() - Date.parse(i.health.lastTransition)) : '—',
      }))),
  h('dl', { class: 'facts' },
    fact('Pod', i.podName, 'fact-wide'),
    fact('IP', i.addresses?.podIP),
    fact('Node', i.kubernetes?.nodeName),
    fact('Zone', i.kubernetes?.zone),
    fact('Ports', portsList(i.ports))));
}

const slotElements = new Map(); // slot id -> { li, signature }
let sectionElements = new Map(); // group -> { section, list }

function renderGrid(instances, filtered, services) {
  const groups = slotsByService(instances, filtered, services);
  const grids = $('grids');
  const multi = groups.length > 1;
  const seenSlots = new Set();
  const nextSections = new Map();
  for (const group of groups) {
    let entry = sectionElements.get(group.group);
    if (!entry) {
      const list = h('ol', { class: 'grid' });
      const heading = h('h3', { class: 'service-name' });
      const section = h('section', { class: 'service', 'data-service': group.service }, heading, list);
      entry = { section, list, heading };
    }
    entry.heading.textContent = `${group.service} · ${group.namespace}`;
    entry.heading.hidden = !multi;
    nextSections.set(group.group, entry);
    // Move nodes only when out of place: re-inserting a node restarts its animation.
    if (entry.section.parentNode !== grids || entry.section !== grids.children[nextSections.size - 1]) {
      grids.insertBefore(entry.section, grids.children[nextSections.size - 1] ?? null);
    }
    let position = 0;
    for (const slot of group.slots) {
      seenSlots.add(slot.id);
      const signature = cardSignature(slot);
      let el = slotElements.get(slot.id);
      if (!el) {
        el = { li: h('li', { class: 'slot' }), signature: null };
        slotElements.set(slot.id, el);
      }
      if (el.signature !== signature) {
        const wasShown = el.signature !== null;
        el.li.replaceChildren(renderCard(slot));
        el.signature = signature;
        if (wasShown) flash(el.li);
      }
      if (entry.list.children[position] !== el.li) entry.list.insertBefore(el.li, entry.list.children[position] ?? null);
      position++;
    }
  }
  for (const [id, el] of slotElements) {
    if (!seenSlots.has(id)) {
      el.li.remove();
      slotElements.delete(id);
    }
  }
  for (const [group, entry] of sectionElements) {
    if (!nextSections.has(group)) entry.section.remove();
  }
  sectionElements = nextSections;
  $('empty').hidden = instances.size > 0;
}

function flash(el) {
  el.classList.remove('changed');
  void el.offsetWidth; // restart the animation
  el.classList.add('changed');
  el.addEventListener('animationend', () => el.classList.remove('changed'), { once: true });
}

// ---- header, log ----------------------------------------------------------------------

function renderHeader(instances, state, meta) {
  let ready = 0;
  let notReady = 0;
  for (const i of instances.values()) {
    if (statusInfo(stateOf(i)).ready) ready++;
    else notReady++;
  }
  $('mode-name').textContent = meta?.mode ?? '…';
  $('pod-count').textContent = String(instances.size);
  $('count-ready').textContent = String(ready);
  $('count-not-ready').textContent = String(notReady);
  const connection = $('connection');
  connection.dataset.state = state;
  $('connection-text').textContent = CONNECTION[state] ?? state;
  const banner = $('banner');
  const since = meta?.lastUpdate ? ` from ${clock(new Date(meta.lastUpdate))}` : '';
  const message = {
    reconnecting: `The live stream is down: showing the last known state${since}. Reconnecting…`,
    fallback: `The live stream is down: showing a snapshot${since}, refreshed every 5 s until the stream is back.`,
    closed: 'The stream is closed. Reload the page to reconnect.',
  }[state];
  banner.hidden = !message;
  banner.textContent = message ?? '';
  banner.dataset.state = state;
  document.body.classList.toggle('stale', Boolean(message));
  if (meta?.lastUpdate) {
    const t = new Date(meta.lastUpdate);
    const el = $('last-update');
    el.dateTime = meta.lastUpdate;
    el.textContent = clock(t);
  }
  document.title = `${ready}/${instances.size} ready · loco-discovery`;
}

const log = [];

function logLine(change) {
  const { type, event } = change;
  const now = new Date();
  if (type === 'snapshot') return null;
  if (type === 'reset') return { now, type, tone: 'info', text: `Stream reset${event?.reason ? ` (${event.reason})` : ''}: ${event?.instances?.length ?? 0} instances` };
  if (type === 'reconnect') return { now, type, tone: 'warn', text: 'Gateway restarting; the stream will reconnect' };
  if (type === 'state') {
    if (change.state === 'reconnecting') return { now, type: 'stream', tone: 'warn', text: 'Stream lost, reconnecting' };
    if (change.state === 'live') return { now, type: 'stream', tone: 'ok', text: 'Stream live' };
    return null;
  }
  if (type === 'fallback') return null;
  const instance = event?.instance;
  const status = instance ? statusInfo(stateOf(instance)).label.toLowerCase() : '';
  const reason = event?.reason ? ` (${event.reason})` : '';
  const what = {
    InstanceAdded: `added, ${status}`,
    InstanceReady: 'is ready',
    InstanceNotReady: `not ready: ${status}${reason}`,
    InstanceUpdated: 'updated',
    InstanceRemoved: `removed${reason}`,
  }[type] ?? type;
  const tone = { InstanceReady: 'ok', InstanceAdded: 'info', InstanceUpdated: 'info', InstanceNotReady: 'warn', InstanceRemoved: 'off' }[type] ?? 'info';
  return { now, type, tone, text: `${shortName(instance)} ${what}`, latencyMs: change.latencyMs };
}

function renderLog(entry) {
  log.unshift(entry);
  log.length = Math.min(log.length, LOG_SIZE);
  const list = $('event-log');
  const item = h('li', { class: `log-entry tone-${entry.tone}`, 'data-type': entry.type },
    h('time', { class: 'log-time', datetime: entry.now.toISOString(), text: clock(entry.now) }),
    h('span', { class: 'log-type', text: entry.type }),
    h('span', { class: 'log-text', text: entry.text }),
    entry.latencyMs !== undefined && entry.latencyMs !== null
      ? h('span', { class: 'log-latency', title: 'discovery latency', text: formatLatency(entry.latencyMs) })
      : null);
  list.prepend(item);
  while (list.children.length > LOG_SIZE) list.lastElementChild.remove();
  $('event-log-empty').hidden = true;
}

function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll('time[data-since]')) {
    const since = Date.parse(el.dataset.since);
    if (Number.isFinite(since)) el.textContent = formatAge(now - since);
  }
}

// ---- wiring ---------------------------------------------------------------------------

function filtersFromLocation() {
  const params = new URLSearchParams(location.search);
  const filters = {};
  for (const name of ['namespace', 'service', 'status', 'zone']) {
    const values = params.getAll(name).flatMap((v) => v.split(',')).filter(Boolean);
    if (values.length) filters[name] = values;
  }
  return filters;
}

function start() {
  const filters = filtersFromLocation();
  const filtered = Boolean(filters.status || filters.zone);
  const described = Object.entries(filters).map(([k, v]) => `${k}=${v.join(',')}`).join(' · ');
  if (described) {
    $('filters').hidden = false;
    $('filters').textContent = `Filtered: ${described}`;
  }
  const baseUrl = new URL('.', location.href).href;
  // A gateway with authentication on: the token comes in the fragment (#access_token=...),
  // which the browser never sends to a server, in a Referer or in an access log.
  const token = tokenFromFragment(location.hash);
  let scheduled = false;
  let latest = { instances: new Map(), state: 'connecting', meta: null };
  const paint = () => {
    scheduled = false;
    renderGrid(latest.instances, filtered, latest.meta?.services);
    renderHeader(latest.instances, latest.state, latest.meta);
  };
  const subscription = subscribe({ ...filters, baseUrl, token }, (instances, change) => {
    latest = { instances, state: change.state, meta: change.meta };
    if (change.latencyMs !== null && change.latencyMs !== undefined) {
      $('latency').textContent = formatLatency(change.latencyMs);
    }
    const entry = logLine(change);
    if (entry) renderLog(entry);
    // Paint at once (a hidden tab gets no animation frames, and updates must not wait).
    if (!scheduled) {
      scheduled = true;
      queueMicrotask(paint);
    }
  });
  window.locoDiscovery = subscription; // for debugging from the console
  paint();
  setInterval(tick, 1000);
}

start();
