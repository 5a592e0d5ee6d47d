// Unit tests of integrations/lego-loco/liveInstances.js: the envelope it builds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toEnvelope, subscribe } from '../../../integrations/lego-loco/liveInstances.js';

function instance(ordinal, state, status = state) {
  return { id: `instance-${ordinal}`, key: `loco/emu/emu-${ordinal}`, ordinal, namespace: 'loco', service: 'emu', podName: `emu-${ordinal}`, state, status };
}

const meta = { mode: 'kubernetes-endpointslices', namespace: 'loco', serviceName: 'emu', services: ['emu'], lastUpdate: '2026-01-01T00:00:00.000Z' };

test('the envelope has the fields of /api/instances/live, instances in grid order', () => {
  const instances = new Map([
    ['b', instance(2, 'offline', 'degraded')],
    ['a', instance(0, 'ready')],
    ['c', instance(1, 'degraded')],
    ['d', instance(3, 'booting')],
  ]);
  const envelope = toEnvelope(instances, meta);
  assert.deepEqual(Object.keys(envelope), ['mode', 'discoveryMode', 'namespace', 'serviceName', 'services', 'lastUpdate', 'stats', 'summary', 'instances']);
  assert.deepEqual(envelope.instances.map((i) => i.id), ['instance-0', 'instance-1', 'instance-2', 'instance-3']);
  assert.deepEqual(envelope.stats, { total: 4, ready: 1, degraded: 1, notReady: 2 }, 'counted by state: terminating is not degraded');
  assert.deepEqual(envelope.summary, { total: 4, ready: 1, notReady: 3, lastUpdate: meta.lastUpdate });
  assert.equal(envelope.mode, 'kubernetes-endpointslices');
  assert.equal(envelope.discoveryMode, 'kubernetes-endpointslices');
  assert.equal(envelope.serviceName, 'emu');
});

test('instances of a gateway without `state` are counted by `status`', () => {
  const old = { ...instance(0, 'ready'), state: undefined };
  assert.deepEqual(toEnvelope([old], { ...meta, serviceName: undefined }).stats, { total: 1, ready: 1, degraded: 0, notReady: 0 });
  assert.equal(toEnvelope([], { ...meta, serviceName: undefined, services: ['a', 'b'] }).serviceName, 'a,b');
});

test('subscribe passes the token on: access_token on the stream, a bearer header on fetches', async () => {
  const opened = [];
  class FakeEventSource {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      opened.push(this);
    }
    addEventListener() {}
    close() {
      this.readyState = 2;
    }
  }
  const inits = [];
  const fetch = async (url, init) => {
    inits.push(init);
    throw new Error('down');
  };
  const unsubscribe = subscribe(() => {}, { baseUrl: 'http://gw.example', token: 'lego-token', EventSource: FakeEventSource, fetch });
  assert.equal(new URL(opened[0].url).searchParams.get('access_token'), 'lego-token');
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(inits[0].headers.authorization, 'Bearer lego-token');
  unsubscribe();
});
