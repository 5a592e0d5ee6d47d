// liveInstances.js — the lego-loco frontend's `/api/instances/live` envelope, kept up to
// date from the loco-discovery gateway's event stream instead of a five-second poll.
//
//   import { subscribe } from './liveInstances.js';
//   const unsubscribe = subscribe((envelope) => setStatus(envelope));
//   ...
//   unsubscribe();
//
// Dependency-free ES module; it needs `discovery-client.js` beside it (the gateway's client
// library, which does the streaming: the snapshot, deltas, resuming with Last-Event-ID,
// `reset`, and polling `/api/instances/live` every 5 s while the stream is down, until it is
// back). This module turns that client's instance Map into the envelope `/live` answers:
// `mode`, `discoveryMode`, `namespace`, `serviceName`, `services`, `lastUpdate`, `stats`,
// `summary` and `instances` (sorted for the grid).

import { subscribe as subscribeToStream, sortInstances } from './discovery-client.js';

/** The gateway's word for an instance's state (`status` is the word the cards draw). */
function stateOf(instance) {
  return instance.state ?? instance.status;
}

/**
 * The `/api/instances/live` envelope of `instances` (a Map or an iterable) with the facts
 * of the last snapshot (`meta`: `mode`, `namespace`, `serviceName`, `services`,
 * `lastUpdate`). Counts follow the gateway: `ready + degraded + notReady == total`.
 */
export function toEnvelope(instances, meta = {}) {
  const list = sortInstances(instances);
  const stats = { total: list.length, ready: 0, degraded: 0, notReady: 0 };
  for (const instance of list) {
    const state = stateOf(instance);
    if (state === 'ready') stats.ready += 1;
    else if (state === 'degraded') stats.degraded += 1;
    else stats.notReady += 1;
  }
  const services = meta?.services ?? [];
  return {
    mode: meta?.mode,
    discoveryMode: meta?.mode,
    namespace: meta?.namespace,
    serviceName: meta?.serviceName ?? services.join(','),
    services,
    lastUpdate: meta?.lastUpdate,
    stats,
    summary: {
      total: stats.total,
      ready: stats.ready,
      notReady: stats.notReady + stats.degraded,
      lastUpdate: meta?.lastUpdate,
    },
    instances: list,
  };
}

/**
 * Calls `listener(envelope, change)` with the whole envelope after every change, from the
 * first snapshot on. `change` tells what happened: `type` (a stream event type, `fallback`
 * for a polled snapshot, `state` for a connection change) and `state` (`connecting`,
 * `live`, `reconnecting`, `fallback`).
 *
 * `options` are those of `discovery-client.js`: `baseUrl` (default: this origin, whose
 * `/api` reaches the gateway), the filters `service(s)`, `namespace`, `zone`, `status`,
 * `fallbackIntervalMs` (default 5000), `reopenDelayMs`, `token` (for a gateway with
 * authentication on: a bearer token or JWT, sent as `Authorization: Bearer` on fetches and
 * as `access_token` on the stream), `EventSource`, `fetch`.
 *
 * Returns `unsubscribe()`, which stops the stream and the polling.
 */
export function subscribe(listener, options = {}) {
  const subscription = subscribeToStream(options, (instances, change) => {
    if (!change.meta || change.state === 'closed') return;
    listener(toEnvelope(instances, change.meta), { type: change.type, state: change.state });
  });
  return () => subscription.close();
}
