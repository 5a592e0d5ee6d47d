// A pass-through HTTP proxy in front of the gateway (like the lego-loco frontend's nginx
// in front of `/api`) that can refuse the event stream, and can serve a few files of its own.
import http from 'node:http';
import { readFileSync } from 'node:fs';

/**
 * Starts the proxy to `target` (stopped by `t.after`). `files` maps a path of the proxy
 * (`/lib/liveInstances.js`) to `{ file, type }` or `{ body, type }` served instead of the
 * gateway's answer.
 */
export async function streamBlockingProxy(t, target, { files = {} } = {}) {
  const state = { blockStream: false, streams: new Set() };
  const server = http.createServer((req, res) => {
    const own = files[req.url.split('?')[0]];
    if (own) {
      res.writeHead(200, { 'content-type': own.type, 'cache-control': 'no-store' });
      res.end(own.body ?? readFileSync(own.file));
      return;
    }
    if (state.blockStream && req.url.includes('/instances/stream')) {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '5' });
      res.end('{"error":"stream blocked by the test proxy","code":503}');
      return;
    }
    const upstream = http.request(target + req.url, { method: req.method, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
    if (req.url.includes('/instances/stream')) {
      state.streams.add(res);
      res.on('close', () => {
        state.streams.delete(res);
        upstream.destroy();
      });
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => {
    for (const res of state.streams) res.destroy();
    server.closeAllConnections?.();
    server.close(resolve);
  }));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    blockStream() {
      state.blockStream = true;
      for (const res of state.streams) res.destroy();
    },
    unblockStream() {
      state.blockStream = false;
    },
  };
}
