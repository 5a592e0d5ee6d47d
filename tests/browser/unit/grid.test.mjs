// Unit tests of static/grid.js: the dashboard's slots never follow the largest ordinal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { slotsByService, SLOTS } from '../../../static/grid.js';

function instance(pod, ordinal) {
  return {
    key: `loco/loco-loco-emulator/${pod}`,
    id: ordinal === null ? pod : `instance-${ordinal}`,
    podName: pod,
    ordinal,
    service: 'loco-loco-emulator',
    namespace: 'loco',
    status: 'ready',
  };
}

test('a huge ordinal is one card, not a grid that size', () => {
  const [grid] = slotsByService([instance('x', 4294967295), instance('loco-loco-emulator-0', 0)], false);
  assert.equal(grid.slots.length, SLOTS + 1);
  assert.equal(grid.slots[0].instance.podName, 'loco-loco-emulator-0');
  assert.equal(grid.slots[SLOTS].instance.podName, 'x');
});

test('the nine slots stay, sparse ordinals beyond them follow in order', () => {
  const list = [instance('e-9000', 9000), instance('e-3', 3), instance('e-20', 20), instance('dep', null)];
  const [grid] = slotsByService(list, false);
  assert.deepEqual(
    grid.slots.map((s) => s.instance?.podName ?? `empty-${s.ordinal}`),
    ['empty-0', 'empty-1', 'empty-2', 'e-3', 'empty-4', 'empty-5', 'empty-6', 'empty-7', 'empty-8', 'e-20', 'e-9000', 'dep'],
  );
});
