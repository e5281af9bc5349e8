// @collective-memory/client: connect to a cmem server and never lose an event.
//
// One state machine over four transports, tried in order until one works:
//   websocket  Socket.IO over a WebSocket
//   polling    Socket.IO over Engine.IO long-polling (passes proxies that drop `Upgrade`)
//   sse        Server-Sent Events (`/api/events/stream`, read with fetch)
//   poll       plain HTTP polling (`/api/events/poll`, passes proxies that hold streams)
// A transport that cannot connect within `connectTimeoutMs`, or is cut again and again before
// it has been up `stableAfterMs`, is abandoned for the next; the list wraps around. Delays
// between attempts grow exponentially with full jitter and are reset once a connection has
// been stable. The transport that last worked is remembered (with the cursor) and tried first;
// while on a lesser one, better ones are probed now and then and the client moves up.
//
// Exactly once: every envelope carries the journal's `epoch` and `id`. The client keeps one
// cursor across transports and reconnects; each new connection starts from it, and ids at or
// below it are dropped. Only the connection in use delivers. A cursor the server cannot honour
// yields a `resync` event, which is passed on, never hidden.
//
// The Engine.IO / Socket.IO client here is written for this library rather than taken from
// socket.io-client: the file must be importable by a page straight from the server (`/client/`)
// with no build step and no copy of third-party code, and the state machine needs what
// socket.io-client keeps to itself (one transport per attempt, no reconnection of its own,
// every packet as a sign of life). It speaks the subset cmem uses: text packets, events, acks.

import { CODES } from './codes.js';

const DEFAULT_TRANSPORTS = ['websocket', 'polling', 'sse', 'poll'];
const SOCKET_IO_EVENTS = new Set(['join_workspace', 'leave_workspace', 'team_message', 'team_notification', 'doc_sync', 'doc_update']);
// names the client emits itself; envelopes of these types reach only `event` listeners
const RESERVED = new Set(['event', 'state']);

const isNode = typeof process !== 'undefined' && !!(process.versions && process.versions.node);
const nodeFs = isNode ? await import('node:fs') : null;

const DEFAULTS = {
  token: null,
  workspaces: null,
  transports: DEFAULT_TRANSPORTS,
  storage: false,
  from: null,
  connectTimeoutMs: 10000,
  backoff: { initialMs: 500, factor: 2, maxMs: 30000 },
  stableAfterMs: 10000,
  failuresBeforeFallback: 2,
  probeIntervalMs: 60000,
  pollWaitS: 25,
  ackTimeoutMs: 10000,
  clientId: null,
  fetch: null,
  WebSocket: null,
};

/**
 * Connects to the cmem server at `url` (`http(s)://host:port`), or to any node of a cluster
 * given as a list of URLs: the client stays on one node and moves to the next when it cannot
 * reach the one it is on, resuming there from its cursor.
 */
export function connect(url, options = {}) {
  return new Client(url, options);
}

/** Failures that say the node could not be reached (rather than that it refused). */
const UNREACHABLE = new Set(['transport', 'closed', 'timeout', 'stalled']);

/**
 * The delay before attempt `attempt` (0-based): a uniformly random value in
 * [0, min(maxMs, initialMs * factor^attempt)) — "full jitter".
 */
export function backoffDelay(attempt, { initialMs = 500, factor = 2, maxMs = 30000 } = {}, random = Math.random) {
  const bound = Math.min(maxMs, initialMs * Math.pow(factor, Math.min(attempt, 64)));
  return Math.floor(random() * bound);
}

/** `"<epoch>:<id>"`, `{epoch, id}` or a bare id → `{epoch, id}` (epoch null for a bare id). */
export function parseCursor(c) {
  if (c === null || c === undefined || c === '') return null;
  if (typeof c === 'number') return { epoch: null, id: c };
  if (typeof c === 'object') return { epoch: c.epoch ?? null, id: Number(c.id) };
  const s = String(c);
  const at = s.lastIndexOf(':');
  const id = Number(at < 0 ? s : s.slice(at + 1));
  if (!Number.isSafeInteger(id) || id < 0) throw new Error(`not a cursor: ${s}`);
  return { epoch: at < 0 ? null : s.slice(0, at), id };
}

function cursorText(c) {
  if (!c) return null;
  return c.epoch ? `${c.epoch}:${c.id}` : String(c.id);
}

function randomId(prefix) {
  const b = new Uint8Array(9);
  globalThis.crypto.getRandomValues(b);
  return prefix + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

class Emitter {
  constructor() { this._handlers = new Map(); }
  on(name, fn) {
    if (!this._handlers.has(name)) this._handlers.set(name, new Set());
    this._handlers.get(name).add(fn);
    return this;
  }
  off(name, fn) { this._handlers.get(name)?.delete(fn); return this; }
  once(name, fn) {
    const wrap = (...a) => { this.off(name, wrap); fn(...a); };
    return this.on(name, wrap);
  }
  _emit(name, ...args) {
    const set = this._handlers.get(name);
    if (!set) return;
    for (const fn of [...set]) {
      try { fn(...args); } catch (e) { queueMicrotask(() => { throw e; }); }
    }
  }
}

/** Where the cursor and the last good transport persist between runs. */
function openStorage(opt) {
  if (!opt) return null;
  if (typeof opt === 'object' && typeof opt.load === 'function' && typeof opt.save === 'function') return opt;
  const key = String(opt);
  if (!isNode && typeof localStorage !== 'undefined') {
    return {
      load: () => { try { return JSON.parse(localStorage.getItem(key)); } catch { return null; } },
      // localStorage writes are synchronous and cheap: every cursor is saved at once, so a
      // reload resumes exactly where the page was
      save: (v) => { try { localStorage.setItem(key, JSON.stringify(v)); } catch { /* full or denied */ } },
    };
  }
  if (nodeFs) {
    let pending = null;
    let timer = null;
    const write = () => {
      timer = null;
      if (!pending) return;
      const tmp = `${key}.tmp`;
      try {
        nodeFs.writeFileSync(tmp, JSON.stringify(pending));
        nodeFs.renameSync(tmp, key);
      } catch { /* unwritable: the cursor lives in memory only */ }
      pending = null;
    };
    return {
      load: () => { try { return JSON.parse(nodeFs.readFileSync(key, 'utf8')); } catch { return null; } },
      // at most one write per 100 ms; `flush` on close
      save: (v) => { pending = v; if (!timer) { timer = setTimeout(write, 100); timer.unref?.(); } },
      flush: () => { if (timer) clearTimeout(timer); write(); },
    };
  }
  return null;
}

async function webSocketClass(opt) {
  if (opt) return opt;
  if (globalThis.WebSocket) return globalThis.WebSocket;
  try {
    return (await import('ws')).default;
  } catch {
    throw new Error('no WebSocket in this runtime: install the `ws` package');
  }
}

class TransportError extends Error {
  constructor(message, code = 'transport') { super(message); this.code = code; }
}

/**
 * What to do about a server's code (`CODES`, generated from the server's table); for a code
 * this version does not know, what the HTTP status suggests.
 */
export function actionOf(code, status = null) {
  const known = code && Object.hasOwn(CODES, code) ? CODES[code] : null;
  if (known) return known.action;
  if (status === 401) return 'reauthenticate';
  if (status === 408 || status === 425 || status === 429) return 'retry';
  if (status >= 400 && status < 500) return 'give_up';
  return 'retry';
}

/**
 * The error for a refusal or close the server explained with `{code, message}`: its class
 * (`code`: 'unauthorized' when a new token is needed, 'forbidden', else `fallback`) follows the
 * server's code, never its words; `reason` is that code and `action` what it asks for.
 */
function serverError(refusal, status, fallback, message) {
  // only a name is a cmem code: Engine.IO's own errors carry numbers (`{"code": 1}`)
  const name = (v) => (typeof v === 'string' && v ? v : null);
  const reason = name(refusal?.code) ?? name(refusal?.data?.code) ?? name(refusal?.reason);
  const action = actionOf(reason, status);
  let code = fallback;
  if (action === 'reauthenticate') code = 'unauthorized';
  else if (reason === 'forbidden' || (!reason && status === 403)) code = 'forbidden';
  return Object.assign(new TransportError(message, code), { reason, action, status });
}

// ------------------------------------------------------------------------------------------
// Socket.IO session, shared by the WebSocket and long-polling legs

/**
 * The Socket.IO (v5) side of an Engine.IO (v4) session: the open packet, heartbeats, the
 * namespace connect with `auth`, events and acks. `sendRaw(text)` is the leg's way out.
 */
class SioSession {
  constructor(leg, auth) {
    this.leg = leg;
    this.auth = auth;
    this.acks = new Map();
    this.nextAck = 0;
    this.heartbeatMs = null;
    this.connected = false;
  }

  onPacket(p) {
    const leg = this.leg;
    leg.alive();
    switch (p[0]) {
      case '0': {
        let open;
        try { open = JSON.parse(p.slice(1)); } catch { return leg.fail(new TransportError('bad open packet')); }
        this.sid = open.sid;
        this.heartbeatMs = (open.pingInterval ?? 25000) + (open.pingTimeout ?? 20000);
        leg.livenessMs = this.heartbeatMs;
        leg.alive();
        leg.onEngineOpen?.(open);
        this.sendRaw('40' + JSON.stringify(this.auth));
        return;
      }
      case '1': return leg.fail(new TransportError('the server closed the session', 'closed'));
      case '2': this.sendRaw('3' + p.slice(1)); return;
      case '3': case '6': return;
      case '4': return this.onSio(p.slice(1));
      default: return;
    }
  }

  onSio(s) {
    const leg = this.leg;
    const type = s[0];
    let i = 1;
    // a namespace other than "/" is not ours
    if (s[i] === '/') return;
    let ack = '';
    while (i < s.length && s[i] >= '0' && s[i] <= '9') ack += s[i++];
    let body = null;
    if (i < s.length) {
      try { body = JSON.parse(s.slice(i)); } catch { return leg.fail(new TransportError('bad Socket.IO packet')); }
    }
    switch (type) {
      case '0':
        this.connected = true;
        this.pid = body?.pid;
        return leg.opened();
      case '4': {
        const msg = (typeof body === 'string' ? body : body?.message) ?? 'connection refused';
        return leg.fail(serverError(typeof body === 'object' ? body : null, null, 'refused', msg));
      }
      case '1': return leg.fail(new TransportError('the server disconnected the socket', 'closed'));
      case '2': {
        if (!Array.isArray(body) || typeof body[0] !== 'string') return;
        const [name, env] = body;
        if (name === 'cmem_close') {
          leg.closing = env;
          return;
        }
        if (env && typeof env === 'object' && typeof env.id === 'number') leg.client._deliver(env, leg);
        return;
      }
      case '3': {
        const pending = this.acks.get(Number(ack));
        if (pending) { this.acks.delete(Number(ack)); pending.resolve(Array.isArray(body) ? body[0] : body); }
        return;
      }
      default: return;
    }
  }

  sendRaw(text) { this.leg.sendRaw(text); }

  emitWithAck(name, data, timeoutMs) {
    const id = this.nextAck++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.acks.delete(id);
        reject(new TransportError(`no answer to ${name} within ${timeoutMs} ms`, 'timeout'));
      }, timeoutMs);
      this.acks.set(id, {
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.sendRaw('42' + id + JSON.stringify([name, data]));
    });
  }

  dropAcks(err) {
    for (const p of this.acks.values()) p.reject(err);
    this.acks.clear();
  }
}

// ------------------------------------------------------------------------------------------
// Legs: one connection attempt over one transport

class Leg {
  constructor(client, transport, cursor) {
    this.client = client;
    this.transport = transport;
    this.cursor = cursor;
    this.isOpen = false;
    this.ended = false;
    this.openedAt = 0;
    this.livenessMs = null;
    this.liveTimer = null;
    // the server's last words (`cmem_close`, SSE `close`): `{code, message, …}`
    this.closing = null;
  }

  /** Any sign of life: data, a heartbeat, an answer. */
  alive() {
    if (this.ended || !this.livenessMs) return;
    clearTimeout(this.liveTimer);
    this.liveTimer = setTimeout(() => {
      this.fail(new TransportError(`nothing from the server for ${this.livenessMs} ms: connection presumed dead`, 'stalled'));
    }, this.livenessMs);
    this.liveTimer.unref?.();
  }

  opened() {
    if (this.ended || this.isOpen) return;
    this.isOpen = true;
    this.openedAt = Date.now();
    this.client._legOpened(this);
  }

  fail(err) {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.liveTimer);
    if (this.closing && err.code === 'closed') {
      const why = this.closing.code || this.closing.reason;
      err = serverError(this.closing, null, 'closed', `the server closed the connection: ${why}`);
      // a close is reported under the server's code (`token_revoked`, `server_shutdown`)
      if (why) err.code = why;
    }
    this.stop();
    this.client._legEnded(this, err);
  }

  /** Ends the leg without telling the client (it asked). */
  close() {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.liveTimer);
    this.stop();
  }

  stop() {}
}

/** A state's `error`: the class, the message, the transport, and the server's code and action. */
function errorOf(err, leg) {
  const e = { code: err.code, message: err.message, transport: leg?.transport ?? null };
  if (err.reason) e.reason = err.reason;
  if (err.action) e.action = err.action;
  return e;
}

function sioAuth(client, cursor) {
  const auth = {};
  if (client._token) auth.token = client._token;
  if (client.opts.workspaces) auth.workspaces = client.opts.workspaces;
  if (cursor) auth.last_event_id = cursorText(cursor);
  return auth;
}

class WebSocketLeg extends Leg {
  async start() {
    const WS = await webSocketClass(this.client.opts.WebSocket);
    if (this.ended) return;
    this.session = new SioSession(this, sioAuth(this.client, this.cursor));
    const u = new URL('socket.io/', this.client.base);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.search = 'EIO=4&transport=websocket';
    let ws;
    try { ws = new WS(u.href); } catch (e) { return this.fail(new TransportError(e.message)); }
    this.ws = ws;
    ws.onmessage = (m) => { if (!this.ended && typeof m.data === 'string') this.session.onPacket(m.data); };
    ws.onerror = () => this.fail(new TransportError('WebSocket error'));
    ws.onclose = (e) => this.fail(new TransportError(`WebSocket closed (${e.code})`, 'closed'));
  }
  sendRaw(text) { try { this.ws?.send(text); } catch { /* closing */ } }
  stop() {
    this.session?.dropAcks(new TransportError('connection closed', 'closed'));
    const ws = this.ws;
    if (!ws) return;
    ws.onmessage = ws.onclose = null;
    // an error after this is expected (the close); Node's `ws` throws one nobody listens to
    ws.onerror = () => {};
    // a socket still connecting is closed once open (closing it now throws in some runtimes)
    try { ws.close(); } catch { ws.onopen = () => ws.close(); }
  }
}

class LongPollingLeg extends Leg {
  async start() {
    this.session = new SioSession(this, sioAuth(this.client, this.cursor));
    this.abort = new AbortController();
    this.outbox = [];
    this.posting = false;
    const first = await this.get();
    if (first === null || this.ended) return;
    this.handle(first);
    this.loop();
  }
  url() {
    const u = new URL('socket.io/', this.client.base);
    u.search = `EIO=4&transport=polling&t=${Date.now().toString(36)}${this.session.sid ? `&sid=${encodeURIComponent(this.session.sid)}` : ''}`;
    return u.href;
  }
  async get() {
    // a GET is answered within pingInterval (a ping at the latest); past that plus the timeout
    // the server is gone
    const limit = this.session.heartbeatMs ? this.session.heartbeatMs + 5000 : this.client.opts.connectTimeoutMs;
    const t = setTimeout(() => this.fail(new TransportError(`no answer to a poll within ${limit} ms`, 'stalled')), limit);
    try {
      const res = await this.client._fetch(this.url(), { signal: this.abort.signal, headers: this.client._headers() });
      const text = await res.text();
      if (!res.ok) { this.fail(httpError(res, text)); return null; }
      return text;
    } catch (e) {
      this.fail(new TransportError(e.message || 'network error'));
      return null;
    } finally {
      clearTimeout(t);
    }
  }
  handle(text) {
    for (const p of text.split('\x1e')) {
      if (this.ended) return;
      if (p) this.session.onPacket(p);
    }
  }
  async loop() {
    while (!this.ended) {
      const text = await this.get();
      if (text === null || this.ended) return;
      this.handle(text);
    }
  }
  sendRaw(text) {
    this.outbox.push(text);
    this.flush();
  }
  async flush() {
    if (this.posting || this.ended || !this.outbox.length || !this.session.sid) return;
    this.posting = true;
    const body = this.outbox.join('\x1e');
    this.outbox = [];
    try {
      const res = await this.client._fetch(this.url(), {
        method: 'POST', body, signal: this.abort.signal,
        headers: { ...this.client._headers(), 'content-type': 'text/plain;charset=UTF-8' },
      });
      const text = await res.text();
      if (!res.ok) return this.fail(httpError(res, text));
    } catch (e) {
      return this.fail(new TransportError(e.message || 'network error'));
    } finally {
      this.posting = false;
    }
    this.flush();
  }
  stop() {
    this.session?.dropAcks(new TransportError('connection closed', 'closed'));
    if (this.session?.sid && this.session.connected) {
      // tell the server at once rather than letting the heartbeat find out
      this.client._fetch(this.url(), { method: 'POST', body: '1', headers: this.client._headers() }).catch(() => {});
    }
    this.abort?.abort();
  }
}

function httpError(res, text) {
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON: a proxy's page */ }
  const message = body?.message ?? body?.error ?? text;
  const fallback = res.status === 401 ? 'unauthorized' : res.status === 403 ? 'forbidden' : `http_${res.status}`;
  const err = serverError(body && typeof body === 'object' ? body : null, res.status, fallback, `HTTP ${res.status}: ${String(message).slice(0, 200)}`);
  // a proxy's refusal says nothing of the server's: no reason, nothing to act on
  if (!err.reason) err.action = null;
  return err;
}

// the token goes in the Authorization header (fetch can set it), never in a URL that proxies log
function scopeQuery(client, params) {
  if (client.opts.workspaces?.length) params.set('workspaces', client.opts.workspaces.join(','));
}

class SseLeg extends Leg {
  async start() {
    this.abort = new AbortController();
    const params = new URLSearchParams();
    scopeQuery(this.client, params);
    if (this.cursor) params.set('last_event_id', cursorText(this.cursor));
    const u = new URL('api/events/stream', this.client.base);
    u.search = params.toString();
    let res;
    try {
      res = await this.client._fetch(u.href, { signal: this.abort.signal, headers: { ...this.client._headers(), accept: 'text/event-stream' } });
    } catch (e) {
      return this.fail(new TransportError(e.message || 'network error'));
    }
    if (!res.ok) return this.fail(httpError(res, await res.text().catch(() => '')));
    if (!/text\/event-stream/.test(res.headers.get('content-type') || '')) {
      return this.fail(new TransportError(`not an event stream (${res.headers.get('content-type')})`));
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let ev = { id: null, event: 'message', data: [] };
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (this.ended) return;
        if (done) return this.fail(new TransportError('the event stream ended', 'closed'));
        this.alive();
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
          if (line === '') {
            if (ev.data.length) this.dispatch(ev);
            ev = { id: null, event: 'message', data: [] };
            if (this.ended) return;
            continue;
          }
          if (line[0] === ':') {
            const m = /heartbeat_ms=(\d+)/.exec(line);
            if (m) {
              const hb = Number(m[1]);
              this.livenessMs = hb + Math.max(5000, hb / 2);
              this.alive();
            }
            this.opened();
            continue;
          }
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? '' : line.slice(colon + 1);
          if (value[0] === ' ') value = value.slice(1);
          if (field === 'data') ev.data.push(value);
          else if (field === 'event') ev.event = value;
          else if (field === 'id') ev.id = value;
          else if (field === 'retry') this.opened();
        }
      }
    } catch (e) {
      if (!this.ended) this.fail(new TransportError(e.message || 'the event stream broke'));
    }
  }
  dispatch(ev) {
    const text = ev.data.join('\n');
    let data;
    try { data = JSON.parse(text); } catch { return; }
    if (ev.event === 'close') {
      this.closing = data;
      return this.fail(new TransportError('the server closed the stream', 'closed'));
    }
    this.opened();
    if (data && typeof data.id === 'number') this.client._deliver(data, this);
  }
  stop() { this.abort?.abort(); }
}

class PollLeg extends Leg {
  async start() {
    this.abort = new AbortController();
    let after = this.cursor ? cursorText(this.cursor) : null;
    let wait = 0;
    while (!this.ended) {
      const params = new URLSearchParams({ client_id: this.client.clientId, limit: '1000', wait: String(wait) });
      if (after) params.set('after', after);
      scopeQuery(this.client, params);
      const u = new URL('api/events/poll', this.client.base);
      u.search = params.toString();
      const limit = (wait * 1000) + (this.isOpen ? 10000 : this.client.opts.connectTimeoutMs);
      const timer = setTimeout(() => this.fail(new TransportError(`no answer to a poll within ${limit} ms`, 'stalled')), limit);
      let body;
      try {
        const res = await this.client._fetch(u.href, { signal: this.abort.signal, headers: this.client._headers() });
        const text = await res.text();
        if (!res.ok) return this.fail(httpError(res, text));
        body = JSON.parse(text);
      } catch (e) {
        return this.fail(new TransportError(e.message || 'network error'));
      } finally {
        clearTimeout(timer);
      }
      if (this.ended) return;
      if (!body || !Array.isArray(body.events)) return this.fail(new TransportError('not a poll answer'));
      this.opened();
      for (const env of body.events) {
        if (this.ended) return;
        if (env && typeof env.id === 'number') this.client._deliver(env, this);
      }
      if (body.next_cursor) after = body.next_cursor;
      wait = this.client.opts.pollWaitS;
    }
  }
  stop() { this.abort?.abort(); }
}

const LEGS = { websocket: WebSocketLeg, polling: LongPollingLeg, sse: SseLeg, poll: PollLeg };

// ------------------------------------------------------------------------------------------
// The client

export class Client extends Emitter {
  constructor(url, options = {}) {
    super();
    this.opts = { ...DEFAULTS, ...options, backoff: { ...DEFAULTS.backoff, ...(options.backoff || {}) } };
    const transports = this.opts.transports || DEFAULT_TRANSPORTS;
    for (const t of transports) if (!LEGS[t]) throw new Error(`unknown transport ${t}; use ${Object.keys(LEGS).join(', ')}`);
    if (!transports.length) throw new Error('no transports');
    this.transports = [...transports];
    const urls = Array.isArray(url) ? url : [url];
    if (!urls.length) throw new Error('no server URL');
    this.bases = urls.map((u) => new URL(u.endsWith('/') ? u : u + '/'));
    this._node = 0;
    this._nodesTried = 0;
    this.clientId = this.opts.clientId || randomId('js-');
    // `token` may be a function (sync or async) that returns one: it is asked before the first
    // attempt and again whenever the server's code says to reauthenticate
    this._token = typeof this.opts.token === 'function' ? null : this.opts.token;
    this._tokenStale = typeof this.opts.token === 'function';
    // transports the server refused, since the last open connection, with a code whose action
    // is `give_up`
    this._gaveUp = new Set();
    this.storage = openStorage(this.opts.storage);
    const saved = this.storage?.load() || null;
    this._cursor = this.opts.from !== null && this.opts.from !== undefined ? parseCursor(this.opts.from) : (saved?.cursor ? parseCursor(saved.cursor) : null);
    this._index = Math.max(0, this.transports.indexOf(saved?.transport));
    this.failures = 0;
    this.attempt = 0;
    this.everConnected = false;
    this.state = 'connecting';
    this.leg = null;
    this.probe = null;
    this.history = [];
    this.closed = false;
    this._timers = new Set();
    // the transport of the last connection that was open: one that was lost (a server that
    // went away, a network that changed) and came back on a lesser one is probed up again soon
    this._lastGood = null;
    // Node: a handle that keeps the event loop (and so the program) alive while the client is
    // open, even between reconnection attempts, whose timers are unref'd; close() ends it
    this._keepAlive = isNode ? setInterval(() => {}, 1 << 30) : null;
    this._waiters = [];
    this._onOnline = () => { if (this.state === 'offline') { this.attempt = 0; this._start(); } };
    this._onOffline = () => this._goOffline();
    if (typeof window !== 'undefined' && window.addEventListener) {
      window.addEventListener('online', this._onOnline);
      window.addEventListener('offline', this._onOffline);
    }
    queueMicrotask(() => {
      if (this.closed) return;
      if (typeof navigator !== 'undefined' && navigator.onLine === false && !isNode) this._goOffline();
      else this._start();
    });
  }

  /** `{epoch, id}` of the last event delivered, or null. */
  get cursor() { return this._cursor ? { ...this._cursor } : null; }

  /** The node in use (or being tried): one of the URLs given to `connect`. */
  get base() { return this.bases[this._node]; }

  /** The node in use (or being tried), as a URL string. */
  get node() { return this.base.href; }

  /** The transport in use (or being tried). */
  get transport() { return this.leg?.transport ?? this.transports[this._index]; }

  _fetch(url, init) { return (this.opts.fetch || globalThis.fetch)(url, init); }

  _headers() { return this._token ? { authorization: `Bearer ${this._token}` } : {}; }

  _timer(fn, ms) {
    const t = setTimeout(() => { this._timers.delete(t); fn(); }, ms);
    t.unref?.();
    this._timers.add(t);
    return t;
  }

  _clearTimer(t) { if (t) { clearTimeout(t); this._timers.delete(t); } }

  _setState(state, extra = {}) {
    this.state = state;
    const s = { state, transport: this.transport, node: this.node, attempt: this.attempt, delay_ms: 0, error: null, ...extra, at: Date.now() };
    this.history.push(s);
    if (this.history.length > 200) this.history.splice(0, this.history.length - 200);
    this._emit('state', s);
    if (state === 'connected') {
      for (const w of this._waiters.splice(0)) w.resolve();
    }
  }

  _start() {
    if (this.closed) return;
    this._clearTimer(this._retryTimer);
    if (this._tokenStale) {
      this._tokenStale = false;
      Promise.resolve().then(() => this.opts.token()).then(
        (t) => { this._token = t || null; this._start(); },
        (e) => this._fail(Object.assign(new TransportError(`the token function failed: ${e?.message ?? e}`, 'unauthorized'), { action: 'reauthenticate' }), null),
      );
      return;
    }
    this.leg?.close();
    const transport = this.transports[this._index];
    const Leg = LEGS[transport];
    const leg = new Leg(this, transport, this._cursor);
    this.leg = leg;
    this._setState(this.everConnected || this.attempt > 0 ? 'reconnecting' : 'connecting', { transport });
    leg.connectTimer = this._timer(() => {
      if (!leg.isOpen) leg.fail(new TransportError(`${transport} did not connect within ${this.opts.connectTimeoutMs} ms`, 'timeout'));
    }, this.opts.connectTimeoutMs);
    leg.start().catch((e) => leg.fail(e instanceof TransportError ? e : new TransportError(e.message)));
  }

  _legOpened(leg) {
    this._clearTimer(leg.connectTimer);
    if (leg === this.probe) return this._adoptProbe(leg);
    if (leg !== this.leg) return leg.close();
    this._connected(leg, {});
  }

  /** `leg` is the connection in use from now on. */
  _connected(leg, extra) {
    this.everConnected = true;
    this._gaveUp.clear();
    this._nodesTried = 0;
    const fellFrom = this._lastGood;
    this._lastGood = this.transports.indexOf(leg.transport);
    // it had a better transport before it lost the connection: the fallback may say nothing
    // about the network (an outage moves down every transport), so look up again soon
    const afterOutage = fellFrom !== null && fellFrom < this._lastGood;
    this._setState('connected', { transport: leg.transport, ...extra });
    this._save();
    this._clearTimer(this._stableTimer);
    this._stableTimer = this._timer(() => {
      if (this.leg === leg && !leg.ended) { this.attempt = 0; this.failures = 0; }
    }, this.opts.stableAfterMs);
    this._scheduleProbe(afterOutage ? Math.min(this.opts.probeIntervalMs, 1000 + Math.random() * 2000) : undefined);
  }

  _legEnded(leg, err) {
    this._clearTimer(leg.connectTimer);
    if (leg === this.probe) {
      this.probe = null;
      if (leg.onProbeFailed) leg.onProbeFailed(); else this._scheduleProbe();
      return;
    }
    if (leg !== this.leg || this.closed) return;
    this.leg = null;
    this._clearTimer(this._probeTimer);
    this.probe?.close();
    this.probe = null;
    const lived = leg.isOpen ? Date.now() - leg.openedAt : 0;
    if (this.state === 'offline') return;
    // the server said trying again cannot help (a workspace the user is not a member of, a
    // malformed request, a transport switched off): the next transport is tried at once, and
    // once every one has said so the client stops (state `failed`), saying why
    const givesUp = !!err.reason && err.action === 'give_up';
    if (givesUp) {
      this._gaveUp.add(leg.transport);
      if (this.transports.every((t) => this._gaveUp.has(t))) return this._fail(err, leg);
    }
    // it asked for a new token: a token function is asked before the next attempt
    if (err.action === 'reauthenticate' && typeof this.opts.token === 'function') this._tokenStale = true;
    // a node that cannot be reached: the next node is tried at once, with the same transport,
    // once each per round; after a round the transports fall back and back off as on one node
    if (this.bases.length > 1 && !leg.isOpen && UNREACHABLE.has(err.code)) {
      if (this._nodesTried < this.bases.length - 1) {
        this._nodesTried += 1;
        this._node = (this._node + 1) % this.bases.length;
        this.attempt += 1;
        this._setState('reconnecting', {
          transport: this.transports[this._index], attempt: this.attempt, delay_ms: 0,
          error: errorOf(err, leg),
        });
        this._retryTimer = this._timer(() => this._start(), 0);
        return;
      }
      this._nodesTried = 0;
    }
    const before = this._index;
    if (lived < this.opts.stableAfterMs) {
      // a timeout costs connectTimeoutMs each time: one is enough to move on (a proxy holding
      // the response), where a quick failure may be passing (a server restarting)
      this.failures += err.code === 'timeout' || givesUp ? this.opts.failuresBeforeFallback : 1;
      if (this.failures >= this.opts.failuresBeforeFallback) {
        this.failures = 0;
        this._index = (this._index + 1) % this.transports.length;
      }
    } else {
      this.failures = 0;
      this.attempt = 0;
    }
    if (this.state === 'offline') return;
    // moving on to another transport is not retrying what just failed: it is tried at once
    // (a proxy that blocks two transports then costs no delay), the count still grows
    const delay = this._index !== before ? 0 : backoffDelay(this.attempt, this.opts.backoff);
    this.attempt += 1;
    this._setState('reconnecting', {
      transport: this.transports[this._index], attempt: this.attempt, delay_ms: delay,
      error: errorOf(err, leg),
    });
    this._retryTimer = this._timer(() => this._start(), delay);
  }

  /** Stops for good after `err` (state `failed`); `reconnect()` starts again. */
  _fail(err, leg) {
    this._clearTimer(this._probeTimer);
    this.probe?.close();
    this.probe = null;
    this.leg?.close();
    this.leg = null;
    this._failure = Object.assign(new Error(err.message), { code: err.code, reason: err.reason, action: err.action });
    this._setState('failed', { transport: leg?.transport ?? this.transports[this._index], error: errorOf(err, leg) });
    for (const w of this._waiters.splice(0)) w.reject(this._failure);
  }

  /**
   * Starts again after `failed` (or at once, when waiting to retry): with new options first,
   * such as `setWorkspaces` or a new `token`.
   */
  reconnect(options = {}) {
    if (this.closed) return;
    if ('token' in options) {
      this.opts.token = options.token;
      this._token = typeof options.token === 'function' ? null : options.token;
      this._tokenStale = typeof options.token === 'function';
    }
    if ('workspaces' in options) this.setWorkspaces(options.workspaces);
    this.attempt = 0;
    this.failures = 0;
    this._gaveUp.clear();
    this._start();
  }

  _scheduleProbe(ms = this.opts.probeIntervalMs) {
    this._clearTimer(this._probeTimer);
    if (!this.leg?.isOpen || this._index === 0 || this.closed) return;
    this._probeTimer = this._timer(() => this._probeUp(0), ms);
  }

  /** Tries transport `i` (better than the one in use) beside the current connection. */
  _probeUp(i) {
    if (this.closed || !this.leg?.isOpen || i >= this._index) return this._scheduleProbe();
    const transport = this.transports[i];
    const probe = new LEGS[transport](this, transport, this._cursor);
    this.probe = probe;
    probe.connectTimer = this._timer(() => {
      if (!probe.isOpen) probe.fail(new TransportError('probe timed out', 'timeout'));
    }, this.opts.connectTimeoutMs);
    // a failed probe tries the next better transport before waiting again
    probe.onProbeFailed = () => this._probeUp(i + 1);
    probe.start().catch((e) => probe.fail(new TransportError(e.message)));
  }

  _adoptProbe(probe) {
    this.probe = null;
    const old = this.leg;
    // from here on only the new connection delivers; it started from a cursor at or before
    // the one now held, so ids it repeats are dropped and none is missing
    this.leg = probe;
    this._index = this.transports.indexOf(probe.transport);
    old?.close();
    this.failures = 0;
    this._connected(probe, { upgraded_from: old?.transport });
  }

  _deliver(env, leg) {
    if (leg !== this.leg || this.closed) return;
    const c = this._cursor;
    if (c && env.id <= c.id && (env.epoch === c.epoch || c.epoch === null)) return;
    this._cursor = { epoch: env.epoch ?? c?.epoch ?? null, id: env.id };
    this._save();
    this._emit('event', env);
    if (!RESERVED.has(env.type)) this._emit(env.type, env);
  }

  _save() {
    this.storage?.save({ cursor: cursorText(this._cursor), transport: this.leg?.isOpen ? this.leg.transport : this.transports[this._index] });
  }

  _goOffline() {
    if (this.closed) return;
    this._clearTimer(this._retryTimer);
    this._clearTimer(this._probeTimer);
    this.probe?.close();
    this.probe = null;
    const leg = this.leg;
    this.leg = null;
    leg?.close();
    this._setState('offline');
  }

  /**
   * The workspaces every later connection asks for (`null`: all of the user's). The current
   * connection is not changed: send `join_workspace` / `leave_workspace` for that.
   */
  setWorkspaces(list) {
    this.opts.workspaces = list ? [...list] : null;
  }

  /** Resolves when connected (at once if connected now). */
  whenConnected() {
    if (this.state === 'connected') return Promise.resolve();
    if (this.closed) return Promise.reject(new Error('client closed'));
    if (this.state === 'failed') return Promise.reject(this._failure);
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  /**
   * Sends `type` with `data` and resolves with the server's answer.
   *
   * `team_message` gets a `client_msg_id` (unless it has one) and is retried with it until
   * the server acknowledges it: a repeat is recognised by the server and stored once.
   * Other Socket.IO events (`team_notification`, `join_workspace`, `leave_workspace`,
   * `doc_sync`, `doc_update`) are sent once on the connection in use; notifications also go
   * over HTTP when the transport is SSE or poll. Any other type is published with
   * `POST /api/events` to `options.scope` (default `global`), once.
   */
  async send(type, data = {}, options = {}) {
    if (this.closed) throw new Error('client closed');
    if (type === 'team_message') {
      const msg = { ...data, client_msg_id: data.client_msg_id || randomId('m-') };
      for (let attempt = 0; ; attempt++) {
        await this.whenConnected();
        try {
          return await this._sendOnce(type, msg, options);
        } catch (e) {
          if (!e.retry || this.closed) throw e;
          // a plain timer, not one `close()` clears: after it, `whenConnected` rejects a closed client
          await new Promise((r) => setTimeout(r, e.code === 'rate_limited' ? 1000 : backoffDelay(attempt, this.opts.backoff)));
        }
      }
    }
    await this.whenConnected();
    return this._sendOnce(type, data, options);
  }

  async _sendOnce(type, data, options) {
    const leg = this.leg;
    const retryable = (code) => Object.assign(new Error(`${type} not acknowledged (${code})`), { code, retry: true });
    if (SOCKET_IO_EVENTS.has(type) && leg?.session?.connected) {
      let ack;
      try {
        ack = await leg.session.emitWithAck(type, data, this.opts.ackTimeoutMs);
      } catch (e) {
        throw retryable(e.code || 'transport');
      }
      if (ack?.ok) return ack;
      if (ack?.code === 'rate_limited') throw retryable('rate_limited');
      throw Object.assign(new Error(ack?.message || ack?.error || `${type} refused`), { code: ack?.code || 'refused', action: actionOf(ack?.code) });
    }
    let path; let body;
    if (type === 'team_message' || type === 'team_notification') {
      if (!data.workspace) throw Object.assign(new Error(`${type} needs a workspace`), { code: 'invalid' });
      const { workspace, ...rest } = data;
      path = `api/workspaces/${encodeURIComponent(workspace)}/${type === 'team_message' ? 'messages' : 'notifications'}`;
      body = rest;
    } else if (SOCKET_IO_EVENTS.has(type)) {
      throw Object.assign(new Error(`${type} needs a Socket.IO transport (websocket or polling); in use: ${leg?.transport}`), { code: 'transport' });
    } else {
      path = 'api/events';
      body = { type, scope: options.scope || 'global', data };
    }
    let res; let text;
    try {
      res = await this._fetch(new URL(path, this.base).href, {
        method: 'POST', body: JSON.stringify(body),
        headers: { ...this._headers(), 'content-type': 'application/json' },
      });
      text = await res.text();
    } catch {
      throw retryable('network');
    }
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    if (res.status === 429) throw retryable('rate_limited');
    if (res.status >= 500) throw retryable(`http_${res.status}`);
    if (!res.ok) {
      const action = actionOf(json?.code, res.status);
      const code = action === 'reauthenticate' ? 'unauthorized' : json?.code || (res.status === 403 ? 'forbidden' : 'invalid');
      throw Object.assign(new Error(json?.message || json?.error || `HTTP ${res.status}`), { code, reason: json?.code ?? null, action, status: res.status });
    }
    const payload = json?.data ?? json;
    if (type === 'team_message') return { ok: true, message: payload?.message ?? payload, duplicate: res.status === 200 };
    return { ok: true, ...(payload && typeof payload === 'object' ? payload : { data: payload }) };
  }

  /** Disconnects for good; the cursor stays in storage. */
  close() {
    if (this.closed) return;
    this.closed = true;
    if (this._keepAlive) clearInterval(this._keepAlive);
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    this.probe?.close();
    this.leg?.close();
    this.leg = null;
    this.storage?.flush?.();
    if (typeof window !== 'undefined' && window.removeEventListener) {
      window.removeEventListener('online', this._onOnline);
      window.removeEventListener('offline', this._onOffline);
    }
    for (const w of this._waiters.splice(0)) w.reject(new Error('client closed'));
    this.state = 'closed';
    this._emit('state', { state: 'closed', transport: null, attempt: this.attempt, delay_ms: 0, error: null, at: Date.now() });
  }
}

export { DEFAULT_TRANSPORTS, CODES };
