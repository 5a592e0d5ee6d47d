// discovery-client.js — a dependency-free client for the loco-discovery push gateway.
//
//   import { subscribe } from './discovery-client.js';
//   const sub = subscribe({ services: ['loco-loco-emulator'], zone: 'zone-a' },
//     (instances, change) => render([...instances.values()], change.state));
//   ...
//   sub.close();
//
// It keeps a Map of instances by `key` (`<namespace>/<service>/<pod>`) from the stream's
// `snapshot` and deltas, reconnects and resumes (`Last-Event-ID`, or `?lastEventId=` when
// it reopens the EventSource itself), and while the stream is down polls
// `/api/instances/live` so the view stays roughly current. Every change hands the callback
// a new Map (treat it as read-only), so UI frameworks see a new value.

/** Delta event types; every one but `InstanceRemoved` upserts its `instance`. */
export const DELTA_TYPES = Object.freeze([
  'InstanceAdded',
  'InstanceReady',
  'InstanceNotReady',
  'InstanceUpdated',
  'InstanceRemoved',
]);

/** Every named event the stream sends. */
export const EVENT_TYPES = Object.freeze(['snapshot', 'reset', ...DELTA_TYPES, 'reconnect']);

/**
 * Connection states: `connecting` (first connection), `live` (the stream is open),
 * `reconnecting` (the stream is down, no fresher data), `fallback` (the stream is down,
 * the Map comes from polling the snapshot), `closed` (after `close()`).
 */
export const STATES = Object.freeze(['connecting', 'live', 'reconnecting', 'fallback', 'closed']);

/** The key an instance is tracked by: unique across namespaces and services. */
export function instanceKey(instance) {
  if (instance.key) return instance.key;
  const namespace = instance.namespace ?? instance.kubernetes?.namespace ?? '';
  const service = instance.service ?? instance.kubernetes?.service ?? '';
  return `${namespace}/${service}/${instance.podName ?? instance.id}`;
}

/** A Map by key of the instances of a snapshot envelope (`/live`, `snapshot`, `reset`). */
export function mapFromSnapshot(snapshot) {
  const map = new Map();
  for (const instance of snapshot?.instances ?? []) map.set(instanceKey(instance), instance);
  return map;
}

/**
 * Applies one stream event to `map` and returns the resulting Map: a new one when
 * something changed, `map` itself when the event changes nothing (`reconnect`, unknown
 * types, malformed deltas). `map` is never modified.
 */
export function applyEvent(map, event) {
  if (!event || typeof event !== 'object') return map;
  switch (event.type) {
    case 'snapshot':
    case 'reset':
      return mapFromSnapshot(event);
    case 'InstanceRemoved': {
      const key = event.key ?? (event.instance ? instanceKey(event.instance) : undefined);
      if (key === undefined || !map.has(key)) return map;
      const next = new Map(map);
      next.delete(key);
      return next;
    }
    default: {
      if (!DELTA_TYPES.includes(event.type) || !event.instance) return map;
      const key = event.key ?? instanceKey(event.instance);
      const next = new Map(map);
      next.set(key, event.instance);
      return next;
    }
  }
}

/**
 * Instances (an array, any iterable, or the Map itself) in the order the lego-loco grid
 * fills its slots: by namespace and service, then ordinal, then pod name.
 */
export function sortInstances(instances) {
  const ordinal = (i) => (Number.isInteger(i.ordinal) ? i.ordinal : Number.MAX_SAFE_INTEGER);
  const list = instances instanceof Map ? [...instances.values()] : [...instances];
  return list.sort(
    (a, b) =>
      compare(a.namespace ?? '', b.namespace ?? '') ||
      compare(a.service ?? '', b.service ?? '') ||
      ordinal(a) - ordinal(b) ||
      compare(a.podName ?? '', b.podName ?? '') ||
      compare(instanceKey(a), instanceKey(b)),
  );
}

function compare(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The query string of the stream and snapshot routes for these filters (each a string or
 * an array), with `lastEventId` when given. `services` and `service` are the same filter.
 */
export function buildQuery(filters = {}, lastEventId) {
  const params = new URLSearchParams();
  const add = (name, value) => {
    const list = (Array.isArray(value) ? value : [value])
      .flatMap((v) => String(v ?? '').split(','))
      .map((v) => v.trim())
      .filter(Boolean);
    if (list.length) params.set(name, list.join(','));
  };
  add('namespace', filters.namespace);
  add('service', [filters.services ?? [], filters.service ?? []].flat());
  add('status', filters.status);
  add('zone', filters.zone);
  if (lastEventId) params.set('lastEventId', lastEventId);
  const query = params.toString();
  return query ? `?${query}` : '';
}

/**
 * How long a delta took to reach this client, in milliseconds: now − `changeTime` (when
 * the change happened in the cluster, from the EndpointSlice's trigger time) when the
 * gateway knows it; else the event's `latency` field (a number of milliseconds, or a
 * string such as `"12ms"` or `"0.4s"`); else now − `ts` (when the gateway published it).
 * `null` when the event carries none of them. Clock skew never gives a negative value.
 */
export function eventLatencyMs(event, now = Date.now()) {
  const changed = Date.parse(event?.changeTime ?? '');
  if (Number.isFinite(changed)) return Math.max(0, now - changed);
  const given = parseDuration(event?.latency ?? event?.latencyMs);
  if (given !== null) return given;
  const ts = Date.parse(event?.ts ?? '');
  return Number.isFinite(ts) ? Math.max(0, now - ts) : null;
}

function parseDuration(value) {
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (typeof value !== 'string') return null;
  const m = /^\s*([0-9.]+)\s*(ms|s)?\s*$/.exec(value);
  if (!m) return null;
  const n = Number(m[1]);
  return m[2] === 's' ? n * 1000 : n;
}

const CLOSED = 2;

/** `url` with the `access_token` query parameter when `token` is given. */
export function withToken(url, token) {
  if (!token) return url;
  const sep = url.includes('?') ? '&' : '?';
  return `${url}${sep}access_token=${encodeURIComponent(token)}`;
}

/** The fetch headers of a request to the gateway: JSON, and the bearer token if any. */
export function authHeaders(token) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  return headers;
}

/** The `access_token` of a URL fragment such as `#access_token=...` (null when absent). */
export function tokenFromFragment(hash) {
  const params = new URLSearchParams(String(hash ?? '').replace(/^#/, ''));
  return params.get('access_token') || null;
}

/**
 * Subscribes to the gateway's instance stream.
 *
 * `options`: the filters `services` (or `service`), `namespace`, `zone`, `status` (each a
 * string or an array); `baseUrl` (where the gateway's `/api` is; default: this origin);
 * `fallbackIntervalMs` (snapshot polling while the stream is down, default 5000);
 * `initialFetch` (fetch the snapshot once at start for a fast first paint, default true);
 * `reopenDelayMs` (`[first, max]` backoff when the client must reopen the EventSource
 * itself, default `[1000, 30000]`); `token` (a bearer token or JWT for a gateway with
 * authentication on: sent as `Authorization: Bearer` on fetches and as the `access_token`
 * query parameter on the stream, since EventSource cannot set headers); `EventSource` and
 * `fetch` (to substitute them).
 *
 * `onChange(instances, change)` runs after every change: `instances` is a new Map by key;
 * `change` has `type` (an event type, `fallback` for a polled snapshot, `state` for a
 * connection state change), `event` (the parsed event or snapshot), `state`, `meta`
 * (mode, namespace, services, lastUpdate of the last snapshot), `lastEventId` and, for
 * deltas, `latencyMs`.
 *
 * Returns `{ instances, state, meta, lastEventId, reconnect(), close() }` (live getters).
 */
export function subscribe(options = {}, onChange = () => {}) {
  const {
    baseUrl = '',
    fallbackIntervalMs = 5000,
    initialFetch = true,
    reopenDelayMs = [1000, 30000],
    EventSource: EventSourceImpl = globalThis.EventSource,
    fetch: fetchImpl = globalThis.fetch?.bind(globalThis),
    token = null,
  } = options;
  if (typeof EventSourceImpl !== 'function') throw new Error('subscribe: no EventSource here');

  const root = String(baseUrl).replace(/\/+$/, '');
  const streamUrl = (resumeId) => withToken(`${root}/api/instances/stream${buildQuery(options, resumeId)}`, token);
  const liveUrl = () => `${root}/api/instances/live${buildQuery(options)}`;
  const fetchHeaders = authHeaders(token);

  let instances = new Map();
  let state = 'connecting';
  let meta = null;
  let lastEventId = null;
  let source = null;
  let closed = false;
  let pollTimer = null;
  let reopenTimer = null;
  let reopenFailures = 0;
  let openedSinceReopen = true;
  let resumedWith = null;
  let polling = false;

  const notify = (change) => {
    try {
      onChange(instances, { state, meta, lastEventId, latencyMs: null, event: null, ...change });
    } catch (err) {
      // A failing callback must not break the stream: report it and go on.
      if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
      else console.error(err);
    }
  };

  const setState = (next) => {
    if (next === state) return;
    state = next;
    if (next === 'live' || next === 'closed') stopPolling();
    else startPolling();
    notify({ type: 'state' });
  };

  const keepMeta = (envelope) => {
    meta = {
      mode: envelope.mode ?? envelope.discoveryMode ?? meta?.mode,
      namespace: envelope.namespace,
      serviceName: envelope.serviceName,
      services: envelope.services,
      lastUpdate: envelope.lastUpdate,
    };
  };

  const onEvent = (type) => (message) => {
    if (closed) return;
    if (message.lastEventId) lastEventId = message.lastEventId;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (type === 'reconnect') {
      // The gateway is shutting down; EventSource comes back after the server's `retry`.
      setState('reconnecting');
      notify({ type, event });
      return;
    }
    openedSinceReopen = true;
    reopenFailures = 0;
    if (type === 'snapshot' || type === 'reset') keepMeta(event);
    else if (meta && event.lastUpdate) meta = { ...meta, lastUpdate: event.lastUpdate };
    instances = applyEvent(instances, event);
    if (state !== 'live') {
      state = 'live';
      stopPolling();
    }
    notify({
      type,
      event,
      latencyMs: DELTA_TYPES.includes(type) ? eventLatencyMs(event) : null,
    });
  };

  const open = (resumeId) => {
    resumedWith = resumeId ?? null;
    openedSinceReopen = false;
    const es = new EventSourceImpl(streamUrl(resumeId));
    source = es;
    es.addEventListener('open', () => {
      if (closed || source !== es) return;
      openedSinceReopen = true;
      reopenFailures = 0;
      setState('live');
    });
    for (const type of EVENT_TYPES) {
      es.addEventListener(type, (message) => {
        if (source === es) onEvent(type)(message);
      });
    }
    es.addEventListener('error', () => {
      if (closed || source !== es) return;
      if (es.readyState === CLOSED) {
        // The browser gave up (an HTTP error, a wrong content type): reopen ourselves.
        source = null;
        scheduleReopen();
      }
      if (state !== 'fallback') setState(state === 'connecting' ? 'connecting' : 'reconnecting');
      startPolling();
    });
  };

  const scheduleReopen = () => {
    if (reopenTimer || closed) return;
    // A resume id the gateway refused (it answered an error before any event) is dropped:
    // the next connection starts from a fresh snapshot instead.
    if (!openedSinceReopen && resumedWith && resumedWith === lastEventId) lastEventId = null;
    const [first, max] = reopenDelayMs;
    const base = Math.min(max, first * 2 ** reopenFailures);
    reopenFailures += 1;
    const delay = base / 2 + Math.random() * (base / 2);
    reopenTimer = setTimeout(() => {
      reopenTimer = null;
      if (!closed) open(lastEventId);
    }, delay);
  };

  const poll = async (initial = false) => {
    if (closed || polling || !fetchImpl) return;
    polling = true;
    try {
      const response = await fetchImpl(liveUrl(), {
        cache: 'no-store',
        headers: fetchHeaders,
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const snapshot = await response.json();
      if (closed || state === 'live') return;
      keepMeta(snapshot);
      instances = mapFromSnapshot(snapshot);
      if (!initial && state !== 'fallback') state = 'fallback';
      notify({ type: 'fallback', event: snapshot });
    } catch {
      if (!initial && state === 'fallback') setState('reconnecting');
    } finally {
      polling = false;
    }
  };

  function startPolling() {
    if (pollTimer || closed || state === 'live') return;
    pollTimer = setInterval(() => {
      if (state === 'live') stopPolling();
      else poll();
    }, fallbackIntervalMs);
  }

  function stopPolling() {
    if (pollTimer) clearInterval(pollTimer);
    pollTimer = null;
  }

  open(null);
  if (initialFetch) poll(true);

  return {
    get instances() {
      return instances;
    },
    get state() {
      return state;
    },
    get meta() {
      return meta;
    },
    get lastEventId() {
      return lastEventId;
    },
    /** Closes the current EventSource and opens a new one now, resuming after the last event. */
    reconnect() {
      if (closed) return;
      source?.close();
      source = null;
      if (reopenTimer) clearTimeout(reopenTimer);
      reopenTimer = null;
      open(lastEventId);
    },
    /** Stops everything; no more callbacks after this one. */
    close() {
      if (closed) return;
      source?.close();
      source = null;
      if (reopenTimer) clearTimeout(reopenTimer);
      reopenTimer = null;
      setState('closed');
      closed = true;
      stopPolling();
    },
  };
}
