// The real-time hub end to end: official socket.io-client over WebSocket, long-polling and the
// default upgrade, an EventSource client and a poll loop, all at once, against a real server.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {
  startServer, closeAllClients, publishMany, sioClient, sseClient, pollClient, until, exactly, fence, TEST_EVENT, sleep, tempDir,
} from './lib.mjs';

const servers = [];
after(async () => {
  await closeAllClients();
  for (const s of servers) await s.stop('SIGKILL');
});

async function server(opts) {
  const s = await startServer(opts);
  servers.push(s);
  return s;
}

function allClients(url, tag) {
  return [
    sioClient(url, { transports: ['websocket'], name: `ws-${tag}` }),
    sioClient(url, { transports: ['polling'], name: `polling-${tag}` }),
    sioClient(url, { name: `upgrade-${tag}` }),
    sseClient(url, { name: `sse-${tag}` }),
    pollClient(url, { clientId: `poll-${tag}`, name: `poll-${tag}` }),
  ];
}

async function ready(clients) {
  for (const c of clients) {
    if (c.connected) await c.connected();
    if (c.opened) await c.opened();
  }
  // Every client has its greeting, so it is subscribed. A poll client_id the server still
  // knows is not new and gets none; one answered request shows it is polling.
  await until(() => clients.every((c) => c.ofType('system_status').length >= 1
    || (c.responses !== undefined && c.responses >= 1 && c.cursor !== null)), 'every client subscribed');
}

test('200 events reach every transport in order with identical ids', { timeout: 60000 }, async () => {
  const s = await server();
  const clients = allClients(s.url, 'fan');
  await ready(clients);
  for (const c of clients) {
    assert.equal(c.events[0].type, 'system_status', `${c.name} gets system_status first`);
    assert.ok(c.events[0].scope.startsWith('client:'), `${c.name}: system_status is addressed to it`);
  }
  const ids = await publishMany(s.url, 200, 'fan', 20);
  assert.equal(ids.length, 200);
  await until(() => clients.every((c) => c.tests('fan').length >= 200), 'all 200 events everywhere');
  await fence(s.url, clients); // a duplicate would have arrived before it
  for (const c of clients) {
    exactly(c, ids, 'fan');
    for (const e of c.tests('fan')) {
      assert.equal(typeof e.epoch, 'string');
      assert.equal(e.scope, 'global');
      assert.ok(!Number.isNaN(Date.parse(e.ts)), 'ts is a date');
    }
    // nobody sees another client's system_status
    assert.equal(c.ofType('system_status').length, 1, `${c.name} sees only its own system_status`);
  }
  const upgraded = clients[2];
  await until(() => upgraded.transport() === 'websocket', 'default client upgrades to websocket');
  // The server completes the upgrade when the client's upgrade packet arrives, a moment
  // after the client switches.
  const by = await until(async () => {
    const st = await (await fetch(`${s.url}/api/websocket/status`)).json();
    const b = st.data.connections.by_transport;
    return b.websocket === 2 ? b : null;
  }, 'the server sees the upgrade');
  assert.equal(by.websocket, 2, JSON.stringify(by));
  assert.equal(by.polling, 1, JSON.stringify(by));
  assert.equal(by.sse, 1);
  assert.equal(by.poll, 1);
  for (const c of clients) await c.close();
});

test('each transport resumes after a disconnect with exactly the missed events', { timeout: 60000 }, async () => {
  const s = await server();
  const clients = allClients(s.url, 'r1');
  await ready(clients);
  const first = await publishMany(s.url, 20, 'r1');
  await until(() => clients.every((c) => c.tests('r1').length === 20), 'first 20 everywhere');
  const cursors = clients.map((c) => c.cursor);
  for (const c of clients) await c.close();
  await until(async () => {
    const st = await (await fetch(`${s.url}/api/websocket/status`)).json();
    return st.data.connections.total <= 1; // the poll client lingers until its ttl
  }, 'clients gone');

  const missed = await publishMany(s.url, 100, 'r2');
  const again = [
    sioClient(s.url, { transports: ['websocket'], cursor: cursors[0], name: 'ws-again' }),
    sioClient(s.url, { transports: ['polling'], cursor: cursors[1], name: 'polling-again' }),
    sioClient(s.url, { cursor: cursors[2], name: 'upgrade-again' }),
    sseClient(s.url, { cursor: cursors[3], name: 'sse-again' }),
    pollClient(s.url, { clientId: 'poll-r1', cursor: cursors[4], name: 'poll-again' }),
  ];
  await ready(again);
  await until(() => again.every((c) => c.tests('r2').length >= 100), 'missed events replayed');
  const live = await publishMany(s.url, 10, 'r3');
  await until(() => again.every((c) => c.tests('r3').length >= 10), 'live after replay');
  await fence(s.url, again);
  for (const c of again) {
    exactly(c, missed, 'r2');
    exactly(c, live, 'r3');
    assert.equal(c.tests('r1').length, 0, `${c.name} gets nothing it already had`);
    assert.equal(c.ofType('resync').length, 0, `${c.name} needs no resync`);
    // replay is in id order and comes before live
    const ids = c.tests().map((e) => e.id);
    assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
  }
  assert.ok(first.length === 20);
  for (const c of again) await c.close();
});

test('clients ride through SIGKILL and restart on the same data folder', { timeout: 60000 }, async () => {
  const data = tempDir();
  // A killed server may leave its connections open (Wine keeps a killed process's sockets
  // while it had I/O pending on them): Socket.IO clients then find it gone by its heartbeat,
  // here a short one, and the poll client by its request timeout.
  const env = { CM_PING_INTERVAL_MS: '1000', CM_PING_TIMEOUT_MS: '2000' };
  let s = await server({ data, env });
  const port = s.port;
  const url = s.url;
  const clients = [
    sioClient(url, { transports: ['websocket'], reconnection: true, name: 'ws-k' }),
    sioClient(url, { transports: ['polling'], reconnection: true, name: 'polling-k' }),
    sioClient(url, { reconnection: true, name: 'upgrade-k' }),
    sseClient(url, { name: 'sse-k' }),
    pollClient(url, { clientId: 'poll-k', name: 'poll-k' }),
  ];
  await ready(clients);
  const before = await publishMany(url, 30, 'k1');
  await until(() => clients.every((c) => c.tests('k1').length === 30), 'before kill');
  const res = await s.stop('SIGKILL');
  assert.equal(res.signal, 'SIGKILL');
  s = await server({ data, port, env });
  const afterIds = await publishMany(url, 100, 'k2', 10);
  assert.ok(afterIds[0] > before[29], 'ids continue after restart');
  const behind = () => clients.filter((c) => c.tests('k2').length < 100);
  await until(() => behind().length === 0, () => `every client caught up after restart (behind: ${behind().map((c) => `${c.name} has ${c.tests('k2').length}`).join(', ')})`, 30000);
  await fence(url, clients);
  for (const c of clients) {
    exactly(c, before, 'k1');
    exactly(c, afterIds, 'k2');
    assert.equal(c.ofType('resync').length, 0, `${c.name}: same epoch, no resync`);
  }
  const epochs = new Set(clients.flatMap((c) => c.tests().map((e) => e.epoch)));
  assert.equal(epochs.size, 1, 'the epoch survives a restart');
  for (const c of clients) await c.close();
});

test('a cursor older than retention gets one resync on every transport', { timeout: 60000 }, async () => {
  const s = await server({ args: ['--retention-max-events', '20'] });
  await publishMany(s.url, 60, 'old');
  // retention runs at most once a second on the writer
  await until(async () => {
    const st = await (await fetch(`${s.url}/api/websocket/status`)).json();
    return st.data.journal.oldest_retained_id > 5;
  }, 'retention applied');
  const clients = [
    sioClient(s.url, { transports: ['websocket'], cursor: 2, name: 'ws-old' }),
    sioClient(s.url, { transports: ['polling'], cursor: 2, name: 'polling-old' }),
    sseClient(s.url, { cursor: 2, name: 'sse-old' }),
    pollClient(s.url, { clientId: 'poll-old', cursor: 2, name: 'poll-old' }),
  ];
  await ready(clients);
  await until(() => clients.every((c) => c.ofType('resync').length === 1), 'resync everywhere');
  const fresh = await publishMany(s.url, 5, 'new');
  await until(() => clients.every((c) => c.tests('new').length === 5), 'live after resync');
  for (const c of clients) {
    const r = c.ofType('resync')[0];
    assert.equal(r.data.reason, 'cursor_older_than_retention');
    assert.equal(r.data.requested_cursor, 2);
    assert.ok(r.data.oldest_available_id > 3, `${c.name}: says where history starts`);
    assert.equal(c.events[0].type, 'resync', `${c.name}: resync comes first`);
    assert.equal(c.tests('old').length, 0, `${c.name}: no partial history after a resync`);
    exactly(c, fresh, 'new');
  }
  // a cursor from another epoch is refused the same way
  const other = sioClient(s.url, { transports: ['websocket'], extraAuth: { epoch: 'not-this-one' }, cursor: 1, name: 'epoch' });
  await other.connected();
  await until(() => other.ofType('resync').length === 1, 'epoch resync');
  assert.equal(other.ofType('resync')[0].data.reason, 'epoch_mismatch');
  other.close();
  for (const c of clients) await c.close();
});

test('bad handshakes are refused with a reason and others keep receiving', { timeout: 60000 }, async () => {
  const s = await server();
  const good = sioClient(s.url, { transports: ['websocket'], name: 'good' });
  await good.connected();
  const bad = sioClient(s.url, { transports: ['websocket'], extraAuth: { last_event_id: 'yesterday' }, name: 'bad' });
  const err = await bad.connected().then(() => null, (e) => e);
  assert.ok(err, 'bad auth is refused');
  assert.match(err.message, /last_event_id/);
  bad.close();
  const ids = await publishMany(s.url, 10, 'after-bad');
  await until(() => good.tests('after-bad').length === 10, 'good client still receives');
  exactly(good, ids, 'after-bad');
  good.close();
});

/** One request on a connection of its own (no keep-alive), as a client whose pooled
 * connection was closed would send it. Resolves with status, headers and body. */
function freshRequest(url, { method = 'GET', body = null } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false, headers: { connection: 'close', 'content-type': 'text/plain;charset=UTF-8' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.end(body ?? undefined);
  });
}

test('shutting down, the server still accepts the connection a long-polling client needs to fetch its cmem_close', { timeout: 40000 }, async () => {
  // a grace period far longer than the test: the server must end as soon as its one
  // polling client has collected its last words, not at the deadline
  const s = await server({ env: { CM_SHUTDOWN_GRACE_MS: '120000' } });
  const eio = `${s.url}/socket.io/?EIO=4&transport=polling`;
  const open = await freshRequest(eio);
  assert.equal(open.status, 200, open.text);
  const { sid } = JSON.parse(open.text.slice(1));
  const at = `${eio}&sid=${encodeURIComponent(sid)}`;
  assert.equal((await freshRequest(at, { method: 'POST', body: '40' })).text, 'ok');
  const connected = await freshRequest(at);
  assert.match(connected.text, /(^|\x1e)40\{/, 'Socket.IO connected');
  // no GET is waiting now: the client's next one needs a new connection
  const exit = s.stop('SIGTERM');
  await until(async () => (await freshRequest(`${s.url}/health`).catch(() => ({ status: 0 }))).status === 503,
    '/health to answer 503 while the server drains');
  // a new session is refused with a 503 that says why (the client retries, elsewhere or later)
  const refused = await freshRequest(eio);
  assert.equal(refused.status, 503, refused.text);
  assert.match(JSON.parse(refused.text).detail, /shutting down/);
  assert.ok(refused.headers['retry-after']);
  // the polling client's next GETs: its last words, then the Engine.IO close
  const packets = [];
  while (!packets.includes('1')) {
    const r = await freshRequest(at);
    assert.equal(r.status, 200, r.text);
    packets.push(...r.text.split('\x1e'));
    assert.ok(packets.length < 50, `no close among ${packets.join(' | ')}`);
  }
  const close = packets.find((p) => p.startsWith('42["cmem_close"'));
  assert.ok(close, `cmem_close among ${packets.join(' | ')}`);
  assert.equal(JSON.parse(close.slice(2))[1].reason, 'server_shutdown');
  assert.ok(packets.indexOf(close) < packets.indexOf('1'), 'the reason comes before the close');
  // everyone was told: the server ends well before its grace period would
  const res = await exit;
  assert.equal(res.code, 0, `clean exit: ${s.stderr()}`);
});

test('graceful shutdown closes clients with a reason and keeps every acknowledged event', { timeout: 60000 }, async () => {
  const data = tempDir();
  const s = await server({ data });
  const sse = sseClient(s.url, { name: 'sse-shutdown' });
  const sio = sioClient(s.url, { transports: ['websocket'], name: 'sio-shutdown' });
  const polling = sioClient(s.url, { transports: ['polling'], name: 'polling-shutdown' });
  await ready([sse, sio, polling]);
  let closeReason = null;
  let pollingReason = null;
  sio.socket.on('cmem_close', (m) => { closeReason = m.reason; });
  polling.socket.on('cmem_close', (m) => { pollingReason = m.reason; });
  const ids = await publishMany(s.url, 50, 'g');
  await until(() => [sse, sio, polling].every((c) => c.tests('g').length === 50), 'delivered');
  const res = await s.stop('SIGTERM');
  assert.equal(res.code, 0, `clean exit: ${s.stderr()}`);
  await until(() => sse.closeEvents.length >= 1, 'sse close event');
  assert.equal(sse.closeEvents[0].reason, 'server_shutdown');
  await until(() => closeReason === 'server_shutdown', 'socket.io told why before the server exited');
  await until(() => pollingReason === 'server_shutdown', 'long-polling told why too');
  sse.close(); sio.close(); polling.close();
  // the journal kept everything: a new client resumes from 0 and gets all 50
  const s2 = await server({ data });
  const late = pollClient(s2.url, { clientId: 'late', cursor: 0 });
  await until(() => late.tests('g').length === 50, 'replay after restart');
  exactly(late, ids, 'g');
  await late.close();
  assert.equal(TEST_EVENT, 'test_event');
});
