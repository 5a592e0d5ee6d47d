// Writing EndpointSlices to the simulated Kubernetes API over its plain REST interface,
// the way the EndpointSlice controller would.

export const NAMESPACE = 'loco';
export const SERVICE = 'loco-loco-emulator';
const SLICES = `/apis/discovery.k8s.io/v1/namespaces/${NAMESPACE}/endpointslices`;

/** One endpoint of emulator pod `ordinal` of `service`. */
export function endpoint(ordinal, { service = SERVICE, serving = true, terminating = false, ip, node, zone } = {}) {
  return {
    addresses: [ip ?? `10.244.${service === SERVICE ? 0 : 1}.${ordinal + 3}`],
    conditions: { ready: true, serving, terminating },
    targetRef: { kind: 'Pod', name: `${service}-${ordinal}`, namespace: NAMESPACE, uid: `uid-${service}-${ordinal}` },
    nodeName: node ?? `loco-node-${ordinal % 3}`,
    zone: zone ?? `zone-${'abc'[ordinal % 3]}`,
  };
}

/** Emulator pods 0–8, each with the options of `overrides[ordinal]`. */
export function nineEndpoints(overrides = {}) {
  return Array.from({ length: 9 }, (_, n) => endpoint(n, overrides[n] ?? {}));
}

export function slice(name, endpoints, { service = SERVICE } = {}) {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: NAMESPACE, labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [
      { name: 'vnc', port: 5901, protocol: 'TCP' },
      { name: 'health', port: 8080, protocol: 'TCP' },
    ],
    endpoints,
  };
}

async function call(simUrl, method, path, body, contentType = 'application/json') {
  const response = await fetch(simUrl + path, {
    method,
    headers: body === undefined ? {} : { 'content-type': contentType },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

export const createSlice = (simUrl, body) => call(simUrl, 'POST', SLICES, body);

/** Merge-patches the slice's `endpoints` (a merge patch replaces the whole array). */
export const patchEndpoints = (simUrl, name, endpoints) =>
  call(simUrl, 'PATCH', `${SLICES}/${name}`, { endpoints }, 'application/merge-patch+json');

export const deleteSlice = (simUrl, name) => call(simUrl, 'DELETE', `${SLICES}/${name}`);

export const listSlices = (simUrl) => call(simUrl, 'GET', SLICES);

/** The gateway's `/api/instances/live` (with a query string such as `?zone=zone-a`). */
export async function live(gatewayUrl, query = '') {
  const response = await fetch(`${gatewayUrl}/api/instances/live${query}`, { signal: AbortSignal.timeout(5000) });
  if (!response.ok) throw new Error(`live: ${response.status}`);
  return response.json();
}
