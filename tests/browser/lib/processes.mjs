// Starting and stopping the loco-discovery binaries for the browser tests: each runs on
// 127.0.0.1, is found by the URL it prints, and is stopped by its PID.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** `LOCO_DISCOVERY_BIN`, else `debug/loco-discovery` in `CARGO_TARGET_DIR` (default `target`). */
export function binaryPath() {
  if (process.env.LOCO_DISCOVERY_BIN) return path.resolve(repoRoot, process.env.LOCO_DISCOVERY_BIN);
  return path.resolve(repoRoot, process.env.CARGO_TARGET_DIR || 'target', 'debug', 'loco-discovery');
}

const running = new Set();

// A test run that dies still leaves no process behind.
process.on('exit', () => {
  for (const child of running) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** A free loopback port (for a gateway that must come back on the same address). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Runs `loco-discovery ARGS…` and waits (at most `timeoutMs`) for a stdout line matching
 * `marker`, whose first `http://…` is the process's URL.
 */
export async function start(args, { marker, env = {}, timeoutMs = 20000, name = args[0] } = {}) {
  const bin = binaryPath();
  if (!existsSync(bin)) throw new Error(`no loco-discovery binary at ${bin} (set LOCO_DISCOVERY_BIN or run cargo build)`);
  const child = spawn(bin, args, {
    cwd: repoRoot,
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
    if (stderr.length > 200_000) stderr = stderr.slice(-100_000);
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    running.delete(child);
    resolve({ code, signal });
  }));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`${name}: no "${marker}" on stdout within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      for (const line of stdout.split('\n')) {
        if (marker.test(line)) {
          const found = /http:\/\/[^\s/]+/.exec(line);
          if (found) {
            clearTimeout(timer);
            resolve(found[0]);
            return;
          }
        }
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? signal}) before printing its URL\nstderr: ${stderr}`));
    });
  });
  return {
    name,
    url,
    pid: child.pid,
    get stderr() {
      return stderr;
    },
    exited,
    /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
    async stop(graceMs = 5000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      process.kill(child.pid, 'SIGTERM');
      const timer = setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
      }, graceMs);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
}

/** `sim --scenario none` on a free port, writing a kubeconfig for `serve` into `dir`. */
export async function startSim(dir) {
  const kubeconfig = path.join(dir, 'kubeconfig');
  const sim = await start(['sim', '--listen', '127.0.0.1:0', '--scenario', 'none', '--write-kubeconfig', kubeconfig], {
    marker: /simulated Kubernetes API listening on/,
    name: 'sim',
  });
  return Object.assign(sim, { kubeconfig });
}

/** `serve` against the sim at `simUrl` (through a kubeconfig the sim wrote). */
export function startGateway(kubeconfig, { listen = '127.0.0.1:0', services, extra = [] } = {}) {
  const args = ['serve', '--listen', listen, '--shutdown-grace', '2s', ...extra];
  if (services) args.push('--service', services.join(','));
  return start(args, {
    marker: /loco-discovery serving on/,
    env: { KUBECONFIG: kubeconfig },
    name: 'serve',
  });
}

/** A sim (in a new folder under `workDir`) and a gateway following it; `t.after` stops both by PID. */
export async function startSimAndGateway(t, workDir, { services, listen } = {}) {
  const dir = mkdtempSync(path.join(workDir, 'sim-'));
  const sim = await startSim(dir);
  t.after(() => sim.stop());
  const gateway = await startGateway(sim.kubeconfig, { services, listen });
  t.after(() => gateway.stop());
  return { sim, gateway, dir };
}

/** `demo`: the simulated 9-pod cluster and the gateway in one process. */
export function startDemo({ pace = '250ms' } = {}) {
  return start(['demo', '--listen', '127.0.0.1:0', '--pace', pace], {
    marker: /loco-discovery demo: open/,
    name: 'demo',
  });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` (sync or async) until it returns a truthy value, at most `timeoutMs`. */
export async function eventually(check, { timeoutMs = 5000, intervalMs = 50, what = 'condition' } = {}) {
  const started = Date.now();
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() - started > timeoutMs) {
      throw new Error(`${what}: not met within ${timeoutMs} ms (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    }
    await sleep(intervalMs);
  }
}
