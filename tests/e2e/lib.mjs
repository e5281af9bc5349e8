// Helpers for the end-to-end suites: start a real `cmem` server, publish through its HTTP API,
// and connect real clients (official socket.io-client, an EventSource client, a poll loop) that
// record every envelope they receive.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { io } from 'socket.io-client';
import EventSource from 'eventsource';

const here = path.dirname(fileURLToPath(import.meta.url));
export const CMEM_BIN = process.env.CMEM_BIN || path.resolve(here, '../../target/debug/cmem');
// A remote target (e.g. the Windows build under Wine) may be given instead of a local binary.
export const TEST_EVENT = 'test_event';
const GRACEFUL_SIGNAL = process.env.CMEM_GRACEFUL_SIGNAL || 'SIGTERM';
// a graceful stop takes well under a second; Wine is slower, and a debug build slower still
const STOP_MS = 30000;

export function tempDir() {
  return mkdtempSync(path.join(tmpdir(), 'cmem-e2e-'));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `fn` until it returns truthy or `ms` pass; throws with `what` on timeout (a function
 * is called then, so it can say how far things got).
 */
export async function until(fn, what, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${typeof what === 'function' ? what() : what}`);
    await sleep(25);
  }
}

/**
 * Starts `cmem serve` and resolves once it prints its address. Wine occasionally fails to
 * start a process (exit 1 within milliseconds, nothing printed; see scripts/wine-cmem); cmem
 * itself never exits with an error unsaid, so such an exit is retried, at most twice.
 */
export async function startServer(opts = {}) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(opts);
    } catch (e) {
      if (attempt >= 3 || !e.silent) throw e;
      console.error(`startServer: the server exited with nothing printed (attempt ${attempt}); retrying`);
      await sleep(500);
    }
  }
}

async function startOnce({ data = tempDir(), port = 0, args = [], env = {} } = {}) {
  const child = spawn(CMEM_BIN, ['serve', '--data', data, '--bind', `127.0.0.1:${port}`, ...args], {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn', CM_SSE_RETRY_MS: '200', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const url = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`server did not start: ${stderr}`)), 20000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[\d.:]+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      const e = new Error(`server exited ${code}: ${stderr}`);
      e.silent = code === 1 && stderr.trim() === '';
      reject(e);
    });
  });
  const exited = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })));
  return {
    url, data, child, exited,
    port: Number(new URL(url).port),
    stderr: () => stderr,
    /**
     * Signals the server and resolves with how it exited. A server that has not exited
     * within `ms` is killed and the call throws, saying so: a shutdown that hangs fails the
     * test that asked for it instead of holding the whole run until its timeout.
     */
    async stop(signal = 'SIGTERM', ms = STOP_MS) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      // Windows has no SIGTERM: a console server stops gracefully on Ctrl-C, which Wine
      // delivers for SIGINT (scripts/windows-ci.sh sets CMEM_GRACEFUL_SIGNAL=SIGINT)
      const sent = signal === 'SIGTERM' ? GRACEFUL_SIGNAL : signal;
      child.kill(sent);
      let timer;
      const late = new Promise((r) => { timer = setTimeout(() => r(null), ms); });
      const how = await Promise.race([exited, late]);
      clearTimeout(timer);
      if (how) return how;
      child.kill('SIGKILL');
      await exited;
      throw new Error(`the server did not exit within ${ms} ms of ${sent}; it was killed. Its stderr ends:\n${stderr.slice(-2000)}`);
    },
  };
}

export async function publish(url, events, token = null) {
  const body = Array.isArray(events) ? { events } : events;
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${url}/api/events`, {
    method: 'POST',
    headers,
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`publish failed ${res.status}: ${json.error}`);
  return json.data.ids;
}

/** Publishes `n` test events in batches; returns their ids. */
export async function publishMany(url, n, tag, batch = 50) {
  const ids = [];
  for (let i = 0; i < n; i += batch) {
    const evs = [];
    for (let j = i; j < Math.min(n, i + batch); j++) evs.push({ type: TEST_EVENT, data: { tag, seq: j } });
    ids.push(...(await publish(url, evs)));
  }
  return ids;
}

/**
 * Publishes one event every client in `clients` may see and waits until each has it. Events
 * arrive in id order, so whatever was committed before it (a duplicate, an event a client must
 * not see) has arrived by then: a test that waits for something *not* to happen waits for this.
 */
let fences = 0;
export async function fence(url, clients, token = null) {
  const tag = `fence-${++fences}`;
  await publish(url, [{ type: TEST_EVENT, data: { tag } }], token);
  await until(() => clients.every((c) => c.tests(tag).length === 1),
    `the fence reaches ${clients.map((c) => c.name).join(', ')}`);
}

/** Every client made here, so a failing test cannot leave sockets that keep node alive. */
const openClients = new Set();
export async function closeAllClients() {
  for (const c of openClients) {
    try { await c.close(); } catch { /* already closed */ }
  }
  openClients.clear();
}

/** Common recording: every envelope, in arrival order, plus the cursor. */
class Recorder {
  constructor(name) { this.name = name; this.events = []; this.cursor = null; openClients.add(this); }
  record(env) {
    this.events.push(env);
    // the cursor names its journal (`<epoch>:<id>`), so a recreated or restored journal is noticed
    if (typeof env.id === 'number') this.cursor = env.epoch ? `${env.epoch}:${env.id}` : env.id;
  }
  ofType(t) { return this.events.filter((e) => e.type === t); }
  tests(tag) { return this.events.filter((e) => e.type === TEST_EVENT && (tag === undefined || e.data.tag === tag)); }
}

/** Official socket.io-client; `auth` is a function so every reconnect sends the latest cursor. */
export function sioClient(url, { transports, reconnection = false, extraAuth = {}, cursor = null, name } = {}) {
  const rec = new Recorder(name || `sio-${transports ? transports.join('+') : 'default'}`);
  rec.cursor = cursor;
  const opts = {
    forceNew: true,
    reconnection,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    auth: (cb) => cb({ ...extraAuth, ...(rec.cursor !== null ? { last_event_id: rec.cursor } : {}) }),
  };
  if (transports) opts.transports = transports;
  const socket = io(url, opts);
  socket.onAny((type, env) => { if (type !== 'cmem_close') rec.record(env); });
  rec.socket = socket;
  rec.connected = () => new Promise((resolve, reject) => {
    if (socket.connected) return resolve();
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  rec.close = () => socket.close();
  rec.transport = () => socket.io.engine && socket.io.engine.transport.name;
  return rec;
}

/** EventSource-style SSE client; reconnects itself and sends Last-Event-ID. */
export function sseClient(url, { cursor = null, types = [TEST_EVENT], name = 'sse', query = '' } = {}) {
  const rec = new Recorder(name);
  rec.cursor = cursor;
  const q = new URLSearchParams(query);
  if (cursor !== null) q.set('last_event_id', String(cursor));
  const es = new EventSource(`${url}/api/events/stream${q.toString() ? `?${q}` : ''}`);
  for (const t of new Set([...types, 'system_status', 'resync'])) {
    es.addEventListener(t, (m) => rec.record(JSON.parse(m.data)));
  }
  rec.closeEvents = [];
  es.addEventListener('close', (m) => rec.closeEvents.push(JSON.parse(m.data)));
  rec.es = es;
  rec.opened = () => new Promise((resolve, reject) => {
    if (es.readyState === 1) return resolve();
    es.onopen = () => resolve();
    es.onerror = (e) => { if (es.readyState === 2) reject(new Error(`sse failed: ${e.message || e.status}`)); };
  });
  rec.close = () => es.close();
  return rec;
}

/**
 * A long-poll loop; keeps its cursor in `after`, retries through server restarts. A request
 * that gets no answer within its wait and 10 s more is abandoned and retried, as a real client
 * would (a server killed under Wine can leave its sockets open, answering nothing); closing
 * aborts the request in flight.
 */
export function pollClient(url, { clientId, cursor = null, wait = 1, name = 'poll', query = '' } = {}) {
  const rec = new Recorder(name);
  rec.cursor = cursor;
  rec.errors = [];
  rec.responses = 0;
  let stopped = false;
  const closing = new AbortController();
  const loop = (async () => {
    while (!stopped) {
      const q = new URLSearchParams(query);
      q.set('client_id', clientId);
      q.set('wait', String(wait));
      if (rec.cursor !== null) q.set('after', String(rec.cursor));
      try {
        const signal = AbortSignal.any([closing.signal, AbortSignal.timeout((wait + 10) * 1000)]);
        const res = await fetch(`${url}/api/events/poll?${q}`, { signal });
        const body = await res.json();
        if (!res.ok) { rec.errors.push(body.error); await sleep(100); continue; }
        rec.responses++;
        for (const e of body.events) rec.record(e);
        rec.cursor = body.next_cursor;
      } catch (e) {
        rec.errors.push(String(e));
        await sleep(100);
      }
    }
  })();
  rec.close = async () => { stopped = true; closing.abort(); await loop; };
  return rec;
}

/** Asserts the recorder holds exactly `ids` as test events, in that order, once each. */
export function exactly(rec, ids, tag) {
  const got = rec.tests(tag).map((e) => e.id);
  const want = ids.join(',');
  if (got.join(',') !== want) {
    const dup = got.filter((id, i) => got.indexOf(id) !== i);
    const missing = ids.filter((id) => !got.includes(id));
    throw new Error(`${rec.name}: got ${got.length} events, want ${ids.length}; duplicates [${dup.slice(0, 10)}], missing [${missing.slice(0, 10)}], first ${got.slice(0, 5)}`);
  }
}
