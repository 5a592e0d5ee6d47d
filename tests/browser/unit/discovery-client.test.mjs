// Unit tests of static/discovery-client.js: delta application, ordering, queries,
// latency, and subscribe()'s reconnect, resume and fallback logic with a fake
// EventSource and fetch.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  applyEvent,
  buildQuery,
  eventLatencyMs,
  instanceKey,
  mapFromSnapshot,
  sortInstances,
  subscribe,
  tokenFromFragment,
  withToken,
} from '../../../static/discovery-client.js';

function instance(ordinal, { service = 'loco-loco-emulator', namespace = 'loco', status = 'ready', ip } = {}) {
  const podName = `${service}-${ordinal}`;
  return {
    id: `instance-${ordinal}`,
    key: `${namespace}/${service}/${podName}`,
    ordinal,
    name: ordinal === 0 ? 'Windows 98 - Game Server' : `Windows 98 - Client ${ordinal}`,
    status,
    ready: status === 'ready',
    podName,
    service,
    namespace,
    addresses: { podIP: ip ?? `10.244.0.${ordinal + 3}` },
    ports: { vnc: 5901, health: 8080 },
    health: { ready: status === 'ready', lastTransition: '2026-01-01T00:00:00.000Z', details: '' },
  };
}

function snapshot(instances, type = 'snapshot') {
  return { type, id: '1.1', mode: 'kubernetes-endpointslices', namespace: 'loco', services: ['loco-loco-emulator'], lastUpdate: '2026-01-01T00:00:00.000Z', instances };
}

function delta(type, inst, extra = {}) {
  return { type, id: '2.1', ts: new Date().toISOString(), namespace: inst.namespace, service: inst.service, instanceId: inst.id, key: inst.key, reason: null, instance: inst, ...extra };
}

describe('applyEvent', () => {
  test('a snapshot replaces the map, keyed by instance key', () => {
    const old = new Map([['x', instance(7)]]);
    const map = applyEvent(old, snapshot([instance(0), instance(1)]));
    assert.deepEqual([...map.keys()], ['loco/loco-loco-emulator/loco-loco-emulator-0', 'loco/loco-loco-emulator/loco-loco-emulator-1']);
    assert.equal(old.size, 1, 'the old map is untouched');
  });

  test('a reset replaces the map like a snapshot', () => {
    let map = applyEvent(new Map(), snapshot([instance(0), instance(1), instance(2)]));
    map = applyEvent(map, snapshot([instance(4)], 'reset'));
    assert.deepEqual([...map.values()].map((i) => i.id), ['instance-4']);
  });

  test('added, ready, not-ready and updated deltas upsert the instance', () => {
    let map = applyEvent(new Map(), snapshot([instance(0)]));
    map = applyEvent(map, delta('InstanceAdded', instance(1, { status: 'booting' })));
    assert.equal(map.get(instance(1).key).status, 'booting');
    map = applyEvent(map, delta('InstanceReady', instance(1)));
    assert.equal(map.get(instance(1).key).status, 'ready');
    map = applyEvent(map, delta('InstanceNotReady', instance(0, { status: 'offline' }), { reason: 'terminating' }));
    assert.equal(map.get(instance(0).key).status, 'offline');
    map = applyEvent(map, delta('InstanceUpdated', instance(1, { ip: '10.9.9.9' })));
    assert.equal(map.get(instance(1).key).addresses.podIP, '10.9.9.9');
    assert.equal(map.size, 2);
  });

  test('a delta for an instance the map lacks inserts it (a not-ready before its add is not lost)', () => {
    const map = applyEvent(new Map(), delta('InstanceNotReady', instance(3, { status: 'booting' })));
    assert.equal(map.get(instance(3).key).status, 'booting');
  });

  test('InstanceRemoved removes by key', () => {
    let map = applyEvent(new Map(), snapshot([instance(0), instance(1)]));
    map = applyEvent(map, delta('InstanceRemoved', instance(1)));
    assert.deepEqual([...map.values()].map((i) => i.id), ['instance-0']);
  });

  test('removing an unknown instance changes nothing and returns the same map', () => {
    const map = applyEvent(new Map(), snapshot([instance(0)]));
    assert.equal(applyEvent(map, delta('InstanceRemoved', instance(5))), map);
  });

  test('the same id in two services is two instances', () => {
    let map = applyEvent(new Map(), snapshot([instance(0), instance(0, { service: 'canary' })]));
    assert.equal(map.size, 2);
    map = applyEvent(map, delta('InstanceNotReady', instance(0, { service: 'canary', status: 'booting' })));
    assert.equal(map.get('loco/canary/canary-0').status, 'booting');
    assert.equal(map.get('loco/loco-loco-emulator/loco-loco-emulator-0').status, 'ready');
    map = applyEvent(map, delta('InstanceRemoved', instance(0, { service: 'canary' })));
    assert.deepEqual([...map.keys()], ['loco/loco-loco-emulator/loco-loco-emulator-0']);
  });

  test('every change returns a new map and leaves the previous one as it was', () => {
    const before = applyEvent(new Map(), snapshot([instance(0)]));
    const after = applyEvent(before, delta('InstanceNotReady', instance(0, { status: 'booting' })));
    assert.notEqual(after, before);
    assert.equal(before.get(instance(0).key).status, 'ready');
    assert.equal(after.get(instance(0).key).status, 'booting');
  });

  test('reconnect, unknown and malformed events change nothing', () => {
    const map = applyEvent(new Map(), snapshot([instance(0)]));
    assert.equal(applyEvent(map, { type: 'reconnect', retryMs: 3000 }), map);
    assert.equal(applyEvent(map, { type: 'SomethingNew', instance: instance(1) }), map);
    assert.equal(applyEvent(map, { type: 'InstanceAdded' }), map);
    assert.equal(applyEvent(map, null), map);
  });

  test('a key is derived when an instance lacks one', () => {
    const i = instance(2);
    delete i.key;
    assert.equal(instanceKey(i), 'loco/loco-loco-emulator/loco-loco-emulator-2');
    const map = applyEvent(new Map(), { type: 'InstanceAdded', instance: i });
    assert.ok(map.has('loco/loco-loco-emulator/loco-loco-emulator-2'));
  });

  test('replaying the same deltas gives the same map (deltas carry full state)', () => {
    const events = [
      delta('InstanceAdded', instance(0, { status: 'booting' })),
      delta('InstanceReady', instance(0)),
      delta('InstanceAdded', instance(1, { status: 'booting' })),
      delta('InstanceRemoved', instance(1)),
    ];
    const once = events.reduce(applyEvent, new Map());
    const twice = [...events, ...events].reduce(applyEvent, new Map());
    assert.deepEqual(twice, once);
  });
});

describe('helpers', () => {
  test('mapFromSnapshot tolerates an empty envelope', () => {
    assert.equal(mapFromSnapshot({}).size, 0);
    assert.equal(mapFromSnapshot(undefined).size, 0);
  });

  test('sortInstances orders by service, then ordinal, pods without ordinal last', () => {
    const noOrdinal = { ...instance(0), ordinal: null, podName: 'odd-pod', key: 'loco/loco-loco-emulator/odd-pod' };
    const sorted = sortInstances(new Map([
      ['a', instance(10)], ['b', noOrdinal], ['c', instance(2)], ['d', instance(0, { service: 'aaa' })],
    ]));
    assert.deepEqual(sorted.map((i) => i.key), [
      'loco/aaa/aaa-0',
      'loco/loco-loco-emulator/loco-loco-emulator-2',
      'loco/loco-loco-emulator/loco-loco-emulator-10',
      'loco/loco-loco-emulator/odd-pod',
    ]);
  });

  test('buildQuery joins repeated filters and adds the resume id', () => {
    const q = new URLSearchParams(buildQuery({ services: ['a', 'b'], namespace: 'loco', zone: 'zone-a', status: ['ready', 'booting'] }, '12.3'));
    assert.equal(q.get('service'), 'a,b');
    assert.equal(q.get('namespace'), 'loco');
    assert.equal(q.get('zone'), 'zone-a');
    assert.equal(q.get('status'), 'ready,booting');
    assert.equal(q.get('lastEventId'), '12.3');
    assert.equal(buildQuery({}), '');
    assert.equal(new URLSearchParams(buildQuery({ service: 'x,y', services: 'z' })).get('service'), 'z,x,y');
  });

  test('eventLatencyMs prefers a latency field, else now minus ts', () => {
    const now = Date.parse('2026-01-01T00:00:01.000Z');
    assert.equal(eventLatencyMs({ ts: '2026-01-01T00:00:00.750Z' }, now), 250);
    assert.equal(eventLatencyMs({ ts: '2026-01-01T00:00:00.750Z', latency: 42 }, now), 42);
    assert.equal(eventLatencyMs({ latency: '0.5s' }, now), 500);
    assert.equal(
      eventLatencyMs({ changeTime: '2026-01-01T00:00:00.900Z', latencyMs: 3, ts: '2026-01-01T00:00:00.950Z' }, now),
      100,
      'the cluster change time gives the end-to-end latency',
    );
    assert.equal(eventLatencyMs({ latency: '17ms' }, now), 17);
    assert.equal(eventLatencyMs({ ts: '2026-01-01T00:00:02.000Z' }, now), 0, 'clock skew never gives a negative latency');
    assert.equal(eventLatencyMs({}, now), null);
  });
});

// ---- subscribe() with a fake EventSource ----------------------------------------------

class FakeEventSource {
  static instances = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.listeners = new Map();
    this.closed = false;
    FakeEventSource.instances.push(this);
  }
  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }
  close() {
    this.closed = true;
    this.readyState = 2;
  }
  dispatch(type, payload = {}) {
    for (const fn of this.listeners.get(type) ?? []) fn(payload);
  }
  // helpers for tests
  open() {
    this.readyState = 1;
    this.dispatch('open');
  }
  send(event) {
    this.dispatch(event.type, { data: JSON.stringify(event), lastEventId: event.id ?? '' });
  }
  fail(readyState) {
    this.readyState = readyState;
    this.dispatch('error');
  }
  static last() {
    return FakeEventSource.instances.at(-1);
  }
}

function fakeFetch(responder) {
  const calls = [];
  const fn = async (url, init) => {
    calls.push(url);
    (fn.inits ??= []).push(init);
    const body = responder(url);
    if (body instanceof Error) throw body;
    return { ok: true, status: 200, json: async () => body };
  };
  fn.calls = calls;
  return fn;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(check, limit = 2000) {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > limit) throw new Error('condition not met in time');
    await sleep(5);
  }
}

function start(options = {}) {
  FakeEventSource.instances = [];
  const changes = [];
  const sub = subscribe(
    { EventSource: FakeEventSource, fetch: fakeFetch(() => new Error('down')), initialFetch: false, ...options },
    (map, change) => changes.push({ map, ...change }),
  );
  return { sub, changes, es: FakeEventSource.last() };
}

describe('subscribe', () => {
  test('builds the stream url from the filters and the base url', () => {
    const { sub, es } = start({ baseUrl: 'http://gw.example/', services: ['a', 'b'], zone: 'zone-a' });
    const url = new URL(es.url);
    assert.equal(url.origin + url.pathname, 'http://gw.example/api/instances/stream');
    assert.equal(url.searchParams.get('service'), 'a,b');
    assert.equal(url.searchParams.get('zone'), 'zone-a');
    assert.equal(url.searchParams.get('lastEventId'), null);
    sub.close();
  });

  test('keeps the map from the snapshot and the deltas, and reports state and latency', () => {
    const { sub, changes, es } = start();
    assert.equal(sub.state, 'connecting');
    es.open();
    assert.equal(sub.state, 'live');
    es.send(snapshot([instance(0), instance(1)]));
    es.send({ ...delta('InstanceNotReady', instance(1, { status: 'booting' })), id: '5.1', latency: 12 });
    assert.equal(sub.instances.size, 2);
    assert.equal(sub.instances.get(instance(1).key).status, 'booting');
    assert.equal(sub.lastEventId, '5.1');
    assert.equal(sub.meta.mode, 'kubernetes-endpointslices');
    const last = changes.at(-1);
    assert.equal(last.type, 'InstanceNotReady');
    assert.equal(last.latencyMs, 12);
    assert.equal(last.map, sub.instances);
    assert.equal(changes.find((c) => c.type === 'snapshot').map.get(instance(1).key).status, 'ready', 'earlier maps are not modified');
    sub.close();
  });

  test('a reconnect event shows reconnecting; the browser\'s own reconnect makes it live again', () => {
    const { sub, es } = start();
    es.open();
    es.send(snapshot([instance(0)]));
    es.send({ type: 'reconnect', retryMs: 3000 });
    assert.equal(sub.state, 'reconnecting');
    es.fail(0); // the server closed the stream; EventSource is CONNECTING again
    assert.equal(FakeEventSource.instances.length, 1, 'EventSource reconnects by itself');
    es.open();
    assert.equal(sub.state, 'live');
    assert.equal(sub.instances.size, 1, 'the map is kept across the reconnect');
    sub.close();
  });

  test('when the EventSource closes for good, it reopens one with lastEventId in the query', async () => {
    const { sub, es } = start({ reopenDelayMs: [10, 20] });
    es.open();
    es.send(snapshot([instance(0)]));
    es.send({ ...delta('InstanceReady', instance(1)), id: '9.2' });
    es.fail(2);
    assert.equal(sub.state, 'reconnecting');
    await until(() => FakeEventSource.instances.length === 2);
    const reopened = FakeEventSource.last();
    assert.equal(new URL(reopened.url, 'http://x').searchParams.get('lastEventId'), '9.2');
    reopened.open();
    reopened.send({ ...delta('InstanceNotReady', instance(0, { status: 'booting' })), id: '10.1' });
    assert.equal(sub.state, 'live');
    assert.equal(sub.instances.size, 2, 'resumed: no snapshot needed, deltas apply to the kept map');
    assert.equal(sub.instances.get(instance(0).key).status, 'booting');
    sub.close();
  });

  test('a resume id refused before any event is dropped on the next attempt', async () => {
    const { sub, es } = start({ reopenDelayMs: [5, 10] });
    es.open();
    es.send({ ...snapshot([instance(0)]), id: '3.1' });
    es.fail(2);
    await until(() => FakeEventSource.instances.length === 2);
    assert.equal(new URL(FakeEventSource.last().url, 'http://x').searchParams.get('lastEventId'), '3.1');
    FakeEventSource.last().fail(2); // e.g. 400 for the id
    await until(() => FakeEventSource.instances.length === 3);
    assert.equal(new URL(FakeEventSource.last().url, 'http://x').searchParams.get('lastEventId'), null);
    sub.close();
  });

  test('reconnect() reopens at once and resumes after the last event', () => {
    const { sub, es } = start();
    es.open();
    es.send({ ...snapshot([instance(0)]), id: '4.1' });
    sub.reconnect();
    assert.ok(es.closed);
    const next = FakeEventSource.last();
    assert.notEqual(next, es);
    assert.equal(new URL(next.url, 'http://x').searchParams.get('lastEventId'), '4.1');
    es.send({ ...delta('InstanceRemoved', instance(0)), id: '5.1' });
    assert.equal(sub.instances.size, 1, 'events from the old EventSource are ignored');
    sub.close();
  });

  test('while the stream is down it polls the snapshot, then stops when the stream is back', async () => {
    let body = new Error('down');
    const fetch = fakeFetch(() => body);
    const { sub, changes, es } = start({ fetch, fallbackIntervalMs: 20 });
    es.open();
    es.send(snapshot([instance(0)]));
    es.fail(0);
    assert.equal(sub.state, 'reconnecting');
    await until(() => fetch.calls.length >= 1);
    assert.equal(sub.state, 'reconnecting', 'a failed poll keeps reconnecting');
    body = { ...snapshot([instance(0), instance(1, { status: 'booting' })]), type: undefined };
    await until(() => sub.state === 'fallback');
    assert.equal(sub.instances.size, 2);
    assert.ok(changes.some((c) => c.type === 'fallback'));
    assert.match(fetch.calls[0], /\/api\/instances\/live$/);
    body = new Error('down again');
    await until(() => sub.state === 'reconnecting');
    es.open();
    assert.equal(sub.state, 'live');
    const calls = fetch.calls.length;
    await sleep(80);
    assert.ok(fetch.calls.length <= calls + 1, 'polling stops once live');
    sub.close();
  });

  test('the initial fetch paints before the stream opens but never overrides it', async () => {
    FakeEventSource.instances = [];
    let release;
    const gate = new Promise((resolve) => (release = resolve));
    const fetch = async () => {
      await gate;
      return { ok: true, status: 200, json: async () => snapshot([instance(0), instance(1)]) };
    };
    const sub = subscribe({ EventSource: FakeEventSource, fetch }, () => {});
    const es = FakeEventSource.last();
    es.open();
    es.send(snapshot([instance(5)]));
    release();
    await sleep(10);
    assert.deepEqual([...sub.instances.values()].map((i) => i.id), ['instance-5']);
    sub.close();

    const fetch2 = async () => ({ ok: true, status: 200, json: async () => snapshot([instance(0), instance(1)]) });
    const sub2 = subscribe({ EventSource: FakeEventSource, fetch: fetch2 }, () => {});
    await sleep(10);
    assert.equal(sub2.instances.size, 2);
    assert.equal(sub2.state, 'connecting', 'a first paint is not a fallback');
    sub2.close();
  });

  test('close() closes the EventSource, stops timers and reports closed', async () => {
    const fetch = fakeFetch(() => new Error('down'));
    const { sub, changes, es } = start({ fetch, fallbackIntervalMs: 10 });
    es.fail(0);
    sub.close();
    assert.ok(es.closed);
    assert.equal(sub.state, 'closed');
    const n = changes.length;
    const calls = fetch.calls.length;
    await sleep(50);
    es.send(snapshot([instance(0)]));
    assert.equal(changes.length, n, 'no callbacks after close');
    assert.equal(fetch.calls.length, calls, 'no polling after close');
  });

  test('a throwing callback does not break the subscription', (t) => {
    FakeEventSource.instances = [];
    const reported = t.mock.method(console, 'error', () => {});
    const sub = subscribe({ EventSource: FakeEventSource, initialFetch: false }, () => {
      throw new Error('render failed');
    });
    const es = FakeEventSource.last();
    es.open();
    es.send(snapshot([instance(0)]));
    es.send(delta('InstanceAdded', instance(1)));
    assert.equal(sub.instances.size, 2);
    sub.close();
    assert.ok(reported.mock.callCount() > 0, 'the error is reported');
  });
});

describe('token', () => {
  test('the stream gets access_token, fetches get the Authorization header', async () => {
    const fetch = fakeFetch(() => snapshot([instance(0)]));
    const { sub, es } = start({ baseUrl: 'http://gw.example', token: 's3cr/t+', fetch, initialFetch: true });
    assert.equal(new URL(es.url).searchParams.get('access_token'), 's3cr/t+');
    await until(() => fetch.calls.length > 0);
    assert.ok(!fetch.calls[0].includes('access_token'), 'no token in the fetched URL');
    assert.equal(fetch.inits[0].headers.authorization, 'Bearer s3cr/t+');
    sub.close();
  });

  test('without a token nothing is added', async () => {
    const fetch = fakeFetch(() => snapshot([instance(0)]));
    const { sub, es } = start({ fetch, initialFetch: true });
    assert.equal(new URL(es.url, 'http://x').searchParams.get('access_token'), null);
    await until(() => fetch.calls.length > 0);
    assert.equal(fetch.inits[0].headers.authorization, undefined);
    sub.close();
  });

  test('helpers: withToken and tokenFromFragment', () => {
    assert.equal(withToken('/s', null), '/s');
    assert.equal(withToken('/s?a=1', 'x y'), '/s?a=1&access_token=x%20y');
    assert.equal(tokenFromFragment('#access_token=abc.def&x=1'), 'abc.def');
    assert.equal(tokenFromFragment(''), null);
    assert.equal(tokenFromFragment('#other=1'), null);
  });
});
