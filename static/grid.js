// The dashboard's grid layout, apart from the DOM so it can be tested on its own.
import { sortInstances } from './discovery-client.js';

export const SLOTS = 9; // the lego-loco grid's default size

/**
 * Slots to draw per service (in the gateway's order of services): the nine slots of the
 * lego-loco grid by ordinal (an empty slot where an ordinal 0-8 has no instance), then every
 * other instance the service has, in order. The slots never outnumber nine plus the
 * instances: a sparse or huge ordinal (`x-4294967295`) is one card, not a grid that size.
 */
export function slotsByService(instances, filtered, services = []) {
  const groups = new Map();
  for (const instance of sortInstances(instances)) {
    const group = `${instance.namespace ?? ''}/${instance.service ?? ''}`;
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push(instance);
  }
  const result = [];
  for (const [group, list] of groups) {
    const byOrdinal = new Map();
    for (const instance of list) {
      if (Number.isInteger(instance.ordinal) && !byOrdinal.has(instance.ordinal)) byOrdinal.set(instance.ordinal, instance);
    }
    const slots = [];
    if (filtered) {
      for (const instance of list) slots.push({ id: `i:${instance.key}`, instance, ordinal: instance.ordinal });
    } else {
      for (let ordinal = 0; ordinal < SLOTS; ordinal++) {
        const instance = byOrdinal.get(ordinal);
        slots.push({ id: instance ? `i:${instance.key}` : `e:${group}/${ordinal}`, instance, ordinal });
      }
      for (const instance of list) {
        if (byOrdinal.get(instance.ordinal) === instance && instance.ordinal < SLOTS) continue;
        slots.push({ id: `i:${instance.key}`, instance, ordinal: instance.ordinal });
      }
    }
    result.push({ group, service: list[0].service, namespace: list[0].namespace, slots });
  }
  const rank = (service) => {
    const n = services.indexOf(service);
    return n === -1 ? services.length : n;
  };
  return result.sort((a, b) => rank(a.service) - rank(b.service));
}
