// Connection state recovery with the official socket.io-client and no auth code of ours: the
// client keeps the pid from the CONNECT answer and the offset of the last event it received,
// sends both when it reconnects, and the server answers from the journal.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { io } from 'socket.io-client';
import {
  startServer, publish, publishMany, sseClient, until, tempDir, closeAllClients, TEST_EVENT,
} from './lib.mjs';

const servers = [];
const sockets = [];
after(async () => {
  for (const s of sockets) s.close();
  await closeAllClients();
  for (const s of servers) await s.stop('SIGKILL');
});

async function server(opts) {
  const s = await startServer(opts);
  servers.push(s);
  return s;
}

/** The official client as an application would use it: reconnection on, no auth function. */
function client(url, opts = {}) {
  const socket = io(url, { forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 300, ...opts });
  sockets.push(socket);
  const c = { socket, events: [], connects: [], offsets: [] };
  socket.on('connect', () => c.connects.push({ id: socket.id, recovered: socket.recovered }));
  socket.onAny((type, env, offset) => {
    if (type === 'cmem_close') return;
    c.events.push(env);
    c.offsets.push(offset);
  });
  c.tests = (tag) => c.events.filter((e) => e.type === TEST_EVENT && e.data.tag === tag);
  c.ofType = (t) => c.events.filter((e) => e.type === t);
  return c;
}

function once(ids, got, what) {
  assert.deepEqual(got.map((e) => e.id), ids, `${what}: every event once, in order`);
}

test('every event carries its offset; an engine closed mid-stream recovers with nothing lost or doubled', { timeout: 60000 }, async () => {
  const s = await server();
  const c = client(s.url, { transports: ['websocket'] });
  await until(() => c.connects.length === 1 && c.ofType('system_status').length === 1, 'connected');
  assert.equal(c.connects[0].recovered, false);
  const status = c.ofType('system_status')[0];
  assert.equal(c.offsets[0], `${status.epoch}:${status.id}`, 'the last argument is the event\'s offset');
  const ids = [];
  for (let i = 0; i < 10; i++) {
    ids.push(...(await publishMany(s.url, 30, 'mid', 10)));
    if (i === 3) c.socket.io.engine.close(); // the transport drops; the client reconnects
  }
  await until(() => c.connects.length === 2, 'reconnected');
  assert.equal(c.connects[1].recovered, true, 'socket.recovered');
  assert.equal(c.connects[1].id, c.connects[0].id, 'the same socket id');
  await until(() => c.tests('mid').length >= ids.length, 'all events');
  const fence = await publish(s.url, [{ type: TEST_EVENT, data: { tag: 'fence' } }]);
  await until(() => c.tests('fence').length === 1, 'the fence');
  once(ids, c.tests('mid'), 'recovered client');
  assert.equal(c.ofType('system_status').length, 1, 'no second greeting: the session continues');
  assert.ok(fence[0] > ids[ids.length - 1]);
});

test('recovery over long-polling and after the upgrade keeps joined workspaces', { timeout: 60000 }, async () => {
  const s = await server();
  for (const transports of [['polling'], ['polling', 'websocket']]) {
    const c = client(s.url, { transports });
    await until(() => c.connects.length === 1, 'connected');
    const ack = await c.socket.timeout(5000).emitWithAck('join_workspace', { workspace: 'ops' });
    assert.equal(ack.ok, true);
    if (transports.length === 2) await until(() => c.socket.io.engine.transport.name === 'websocket', 'upgraded');
    c.socket.io.engine.close();
    await until(() => !c.socket.connected, 'disconnected');
    const missed = await publish(s.url, [
      { type: TEST_EVENT, scope: 'workspace:ops', data: { tag: `ops-${transports.length}` } },
      { type: TEST_EVENT, data: { tag: `ops-${transports.length}` } },
    ]);
    await until(() => c.connects.length === 2, 'reconnected');
    assert.equal(c.connects[1].recovered, true);
    await until(() => c.tests(`ops-${transports.length}`).length === 2, 'the missed events, the workspace one too');
    once(missed, c.tests(`ops-${transports.length}`), transports.join('+'));
    c.socket.close();
  }
});

test('recovery after kill -9 and a restart on the same port', { timeout: 60000 }, async () => {
  const data = tempDir();
  let s = await server({ data });
  const c = client(s.url, { transports: ['websocket'] });
  await until(() => c.connects.length === 1, 'connected');
  const before = await publishMany(s.url, 20, 'kill');
  await until(() => c.tests('kill').length === 20, 'first events');
  await s.stop('SIGKILL');
  s = await server({ data, port: s.port });
  const afterIds = await publishMany(s.url, 20, 'kill');
  await until(() => c.connects.length === 2, 'reconnected to the restarted server');
  assert.equal(c.connects[1].recovered, true, 'recovered across the restart');
  await until(() => c.tests('kill').length >= 40, 'events from both lives');
  await publish(s.url, [{ type: TEST_EVENT, data: { tag: 'fence' } }]);
  await until(() => c.tests('fence').length === 1, 'the fence');
  once([...before, ...afterIds], c.tests('kill'), 'across kill -9');
});

test('a pid from another journal gets a normal connect and a resync, never a replay', { timeout: 60000 }, async () => {
  const data = tempDir();
  let s = await server({ data });
  const c = client(s.url, { transports: ['websocket'] });
  await until(() => c.connects.length === 1, 'connected');
  await publishMany(s.url, 5, 'old');
  await until(() => c.tests('old').length === 5, 'events of the first journal');
  await s.stop('SIGKILL');
  // a new journal (new epoch) in the same place: the pid and offset name the old one
  const state = path.join(data, '.collective-memory');
  for (const f of readdirSync(state)) if (f.startsWith('journal')) rmSync(path.join(state, f));
  s = await server({ data, port: s.port });
  await until(() => c.connects.length === 2, 'reconnected');
  assert.equal(c.connects[1].recovered, false);
  assert.notEqual(c.connects[1].id, c.connects[0].id, 'a new socket id');
  await until(() => c.ofType('resync').length === 1, 'a resync');
  const r = c.ofType('resync')[0];
  assert.ok(['unknown_session', 'epoch_mismatch'].includes(r.data.reason), r.data.reason);
  assert.equal(c.tests('old').length, 5, 'nothing replayed');
});

test('an unknown pid gets a resync; a known pid with an offset from another transport resumes from there', { timeout: 60000 }, async () => {
  const s = await server();
  const bogus = client(s.url, { transports: ['websocket'], auth: { pid: 'made-up.0123456789abcdef', offset: 'x:1' } });
  await until(() => bogus.ofType('resync').length === 1, 'a resync for a made-up pid');
  assert.equal(bogus.ofType('resync')[0].data.reason, 'unknown_session');
  bogus.socket.close();

  // a session, then an offset read over SSE: the session resumes from the SSE cursor
  const a = client(s.url, { transports: ['websocket'], reconnection: false });
  await until(() => a.connects.length === 1, 'connected');
  const pid = a.socket._pid;
  assert.equal(typeof pid, 'string');
  const id = a.connects[0].id;
  a.socket.close();
  const sse = sseClient(s.url, { name: 'sse-offset' });
  await sse.opened();
  await until(() => sse.ofType('system_status').length === 1, 'the SSE stream is subscribed');
  const ids = await publishMany(s.url, 10, 'cross');
  await until(() => sse.tests('cross').length === 10, 'sse has them');
  const cursor = `${sse.tests('cross')[4].epoch}:${sse.tests('cross')[4].id}`;
  const b = client(s.url, { transports: ['websocket'], auth: { pid, offset: cursor } });
  await until(() => b.connects.length === 1, 'connected with the old pid');
  assert.equal(b.connects[0].id, id, 'the session is recovered: same socket id');
  await until(() => b.tests('cross').length === 5, 'the events after the SSE cursor');
  once(ids.slice(5), b.tests('cross'), 'from another transport\'s cursor');
  assert.equal(b.ofType('system_status').length, 0, 'a recovered session is not greeted again');
});
