// The conformance example (crates/cmem/examples/conformance.rs), checked packet by packet over
// raw WebSocket and HTTP long-polling against the Engine.IO 4 / Socket.IO 5 protocols, then
// with the official socket.io-client and engine.io-client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { io } from 'socket.io-client';
import { Socket as EioSocket } from 'engine.io-client';
import { until } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.CONFORMANCE_BIN || path.resolve(here, '../../target/debug/examples/conformance');

let child;
let URL_;
let WS_URL;

before(async () => {
  child = spawn(BIN, [], { env: { ...process.env, CONFORMANCE_PORT: '0' }, stdio: ['ignore', 'pipe', 'inherit'] });
  URL_ = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[\d.:]+)/);
      if (m) resolve(m[1]);
    });
    child.on('exit', (c) => reject(new Error(`conformance server exited ${c}`)));
  });
  WS_URL = URL_.replace('http', 'ws');
});
after(() => child && child.kill('SIGKILL'));

/** A raw WebSocket that queues every message, so none is missed between awaits. */
function rawSocket(pathAndQuery) {
  const ws = new WebSocket(`${WS_URL}${pathAndQuery}`);
  ws.binaryType = 'arraybuffer';
  const queue = [];
  const waiters = [];
  ws.on('message', (data, isBinary) => {
    const v = isBinary ? new Uint8Array(data) : data.toString();
    if (v === '2') { ws.send('3'); return; } // answer heartbeats, keep them out of the way
    const w = waiters.shift();
    if (w) w(v); else queue.push(v);
  });
  const closed = new Promise((r) => ws.on('close', r));
  return {
    ws,
    closed,
    next(ms = 3000) {
      if (queue.length) return Promise.resolve(queue.shift());
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no message')), ms);
        waiters.push((v) => { clearTimeout(t); resolve(v); });
      });
    },
    send: (d) => ws.send(d),
    close: () => ws.close(),
  };
}

async function sioSession(auth = '') {
  const s = rawSocket('/socket.io/?EIO=4&transport=websocket');
  const open = await s.next();
  assert.ok(open.startsWith('0'));
  s.send(`40${auth}`);
  const connect = await s.next();
  assert.ok(connect.startsWith('40'), connect);
  const authPacket = await s.next();
  return { s, connect, authPacket };
}

test('engine.io handshake over polling and websocket carries the configured timings', { timeout: 30000 }, async () => {
  const res = await fetch(`${URL_}/socket.io/?EIO=4&transport=polling`);
  assert.equal(res.status, 200);
  const text = await res.text();
  assert.ok(text.startsWith('0'));
  const h = JSON.parse(text.slice(1));
  assert.deepEqual(Object.keys(h).sort(), ['maxPayload', 'pingInterval', 'pingTimeout', 'sid', 'upgrades']);
  assert.deepEqual(h.upgrades, ['websocket']);
  assert.equal(h.pingInterval, 300);
  assert.equal(h.pingTimeout, 200);
  assert.equal(h.maxPayload, 1000000);
  assert.equal((await fetch(`${URL_}/socket.io/?transport=polling`)).status, 400);
  assert.equal((await fetch(`${URL_}/socket.io/?EIO=abc&transport=polling`)).status, 400);
  assert.equal((await fetch(`${URL_}/socket.io/?EIO=4&transport=abc`)).status, 400);
  const cors = await fetch(`${URL_}/socket.io/?EIO=4&transport=polling`, { headers: { origin: 'http://anywhere.test' } });
  assert.equal(cors.headers.get('access-control-allow-origin'), '*');

  const s = rawSocket('/socket.io/?EIO=4&transport=websocket');
  const open = JSON.parse((await s.next()).slice(1));
  assert.deepEqual(open.upgrades, []);
  assert.equal(open.pingInterval, 300);
  s.close();
});

test('heartbeat: the server pings and closes a silent session after pingInterval + pingTimeout', { timeout: 30000 }, async () => {
  const res = await fetch(`${URL_}/socket.io/?EIO=4&transport=polling`);
  const { sid } = JSON.parse((await res.text()).slice(1));
  const ping = await (await fetch(`${URL_}/socket.io/?EIO=4&transport=polling&sid=${sid}`)).text();
  assert.equal(ping, '2');
  await new Promise((r) => setTimeout(r, 300 + 200 + 100));
  const late = await fetch(`${URL_}/socket.io/?EIO=4&transport=polling&sid=${sid}`);
  assert.equal(late.status, 400);
});

test('connect to / and /custom emits auth with the handshake payload', { timeout: 30000 }, async () => {
  let r = await sioSession();
  assert.ok(JSON.parse(r.connect.slice(2)).sid);
  assert.equal(r.authPacket, '42["auth",{}]');
  r.s.close();
  r = await sioSession('{"token":"123"}');
  assert.equal(r.authPacket, '42["auth",{"token":"123"}]');
  r.s.close();

  const s = rawSocket('/socket.io/?EIO=4&transport=websocket');
  await s.next();
  s.send('40/custom,{"token":"abc"}');
  assert.ok((await s.next()).startsWith('40/custom,'));
  assert.equal(await s.next(), '42/custom,["auth",{"token":"abc"}]');
  s.send('40/random,');
  assert.equal(await s.next(), '44/random,{"message":"Invalid namespace"}');
  s.close();
});

test('message is echoed as message-back with every argument, binary kept', { timeout: 30000 }, async () => {
  const { s } = await sioSession();
  s.send('42["message",1,"2",{"3":[true]}]');
  assert.equal(await s.next(), '42["message-back",1,"2",{"3":[true]}]');
  s.send('451-["message",{"_placeholder":true,"num":0}]');
  s.send(Uint8Array.from([1, 2, 3]));
  assert.equal(await s.next(), '451-["message-back",{"_placeholder":true,"num":0}]');
  assert.deepEqual(Array.from(await s.next()), [1, 2, 3]);
  s.close();
});

test('message-with-ack is answered with an ack of the same arguments', { timeout: 30000 }, async () => {
  const { s } = await sioSession();
  s.send('42456["message-with-ack",1,"2",{"3":[false]}]');
  assert.equal(await s.next(), '43456[1,"2",{"3":[false]}]');
  s.send('452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
  s.send(Uint8Array.from([1, 2, 3]));
  s.send(Uint8Array.from([4, 5, 6]));
  assert.equal(await s.next(), '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
  assert.deepEqual(Array.from(await s.next()), [1, 2, 3]);
  assert.deepEqual(Array.from(await s.next()), [4, 5, 6]);
  s.close();
});

test('invalid packets close the connection', { timeout: 30000 }, async () => {
  for (const bad of ['4abc', '42{}', '42abc["message-with-ack",1]']) {
    const { s } = await sioSession();
    s.send(bad);
    await s.closed;
  }
});

test('official socket.io-client: upgrade, echo, ack, custom namespace', { timeout: 30000 }, async () => {
  const socket = io(URL_, { forceNew: true, auth: { token: 't' } });
  const auth = await new Promise((r) => socket.once('auth', r));
  assert.deepEqual(auth, { token: 't' });
  const back = new Promise((r) => socket.once('message-back', (...args) => r(args)));
  socket.emit('message', 1, 'two', { three: [true] }, Buffer.from([9, 8]));
  const args = await back;
  assert.deepEqual(args.slice(0, 3), [1, 'two', { three: [true] }]);
  assert.deepEqual(Array.from(args[3]), [9, 8]);
  const acked = await socket.timeout(3000).emitWithAck('message-with-ack', 'a', 2);
  assert.equal(acked, 'a'); // emitWithAck resolves with the first ack argument
  const custom = io(`${URL_}/custom`, { forceNew: true });
  assert.deepEqual(await new Promise((r) => custom.once('auth', r)), {});
  await new Promise((r) => { if (socket.io.engine.transport.name === 'websocket') r(); else socket.io.engine.once('upgrade', r); });
  socket.close();
  custom.close();
});

test('engine.io endpoint echoes text and binary, official engine.io-client', { timeout: 30000 }, async () => {
  const s = rawSocket('/engine.io/?EIO=4&transport=websocket');
  assert.ok((await s.next()).startsWith('0'));
  s.send('4hello');
  assert.equal(await s.next(), '4hello');
  s.send(Uint8Array.from([7, 7]));
  assert.deepEqual(Array.from(await s.next()), [7, 7]);
  s.close();

  const socket = new EioSocket(URL_, { path: '/engine.io/' });
  await new Promise((r) => socket.on('open', r));
  const echoed = new Promise((r) => socket.once('message', r));
  socket.send('over polling or websocket');
  assert.equal(await echoed, 'over polling or websocket');
  socket.close();
});

const EIO = () => `${URL_}/engine.io/?EIO=4&transport=polling`;
async function pollingSession() {
  const res = await fetch(EIO());
  return JSON.parse((await res.text()).slice(1)).sid;
}
const get = (sid, extra = '') => fetch(`${EIO()}&sid=${sid}${extra}`);
const post = (sid, body) => fetch(`${EIO()}&sid=${sid}`, { method: 'POST', body });

test('long-polling: payload framing, one GET at a time, and how each kind of close releases it', { timeout: 30000 }, async () => {
  // packets joined by the record separator, binary as b + base64, echoed in one payload
  let sid = await pollingSession();
  const body = '4hello\x1e4world\x1ebAQIDBA==';
  const pushed = await post(sid, body);
  assert.equal(pushed.status, 200);
  assert.equal(await pushed.text(), 'ok');
  assert.equal(await (await get(sid)).text(), body);

  // a second GET while one waits closes the session: the waiting one gets 1, the second 400
  sid = await pollingSession();
  const first = get(sid);
  await new Promise((r) => setTimeout(r, 20));
  const second = await get(sid, '&t=second');
  assert.equal(second.status, 400);
  const r1 = await first;
  assert.equal(r1.status, 200);
  assert.equal(await r1.text(), '1');
  assert.equal((await get(sid)).status, 400);

  // a close from the client releases the waiting GET with a noop
  sid = await pollingSession();
  const waiting = get(sid);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal((await post(sid, '1')).status, 200);
  assert.equal(await (await waiting).text(), '6');
  assert.equal((await get(sid)).status, 400);

  // a packet that does not parse: 400, and the session is gone
  sid = await pollingSession();
  assert.equal((await post(sid, 'abc')).status, 400);
  assert.equal((await get(sid)).status, 400);

  // a body over maxPayload: 413, and the session is gone
  sid = await pollingSession();
  assert.equal((await post(sid, `4${'x'.repeat(1_000_000)}`)).status, 413);
  assert.equal((await get(sid)).status, 400);

  // errors say what was wrong, with the reference server's codes
  const unknown = await get('no-such-session');
  assert.equal(unknown.status, 400);
  assert.equal((await unknown.json()).code, 1);
  assert.equal((await fetch(`${EIO()}`, { method: 'PUT' })).status, 400);
  assert.equal((await fetch(`${URL_}/engine.io/?EIO=3&transport=polling`)).status, 400);
});

test('heartbeat: nothing comes before the first ping is due, so data is never preceded by a 2', { timeout: 30000 }, async () => {
  const sid = await pollingSession();
  assert.equal((await post(sid, '4early')).status, 200);
  assert.equal(await (await get(sid)).text(), '4early');
  // the next GET waits for the first ping (one pingInterval after the handshake)
  assert.equal(await (await get(sid)).text(), '2');
  assert.equal((await post(sid, '3')).status, 200);

  const ws = new WebSocket(`${WS_URL}/engine.io/?EIO=4&transport=websocket`);
  const got = [];
  ws.on('message', (d) => got.push(d.toString()));
  await new Promise((r) => ws.once('open', r));
  await until(() => got.length === 1);
  ws.send('4first');
  await until(() => got.length >= 2);
  assert.deepEqual(got.slice(0, 2).map((m) => m[0]), ['0', '4'], 'the echo comes before any ping');
  await until(() => got.includes('2'));
  ws.close();
});

test('upgrade: probe, the waiting GET released with 6, then 5; afterwards polling is refused and a second WebSocket is opened and closed, as the reference server does', { timeout: 30000 }, async () => {
  const sid = await pollingSession();
  const waiting = get(sid);
  await new Promise((r) => setTimeout(r, 20));
  const s = rawSocket(`/engine.io/?EIO=4&transport=websocket&sid=${sid}`);
  await new Promise((r) => s.ws.once('open', r));
  s.send('2probe');
  assert.equal(await s.next(), '3probe');
  assert.equal(await (await waiting).text(), '6');
  s.send('5');
  s.send('4over websocket');
  assert.equal(await s.next(), '4over websocket');
  assert.equal((await get(sid)).status, 400, 'polling after the upgrade');
  // engine.io-protocol's "ignores WebSocket connection with same sid after upgrade": the
  // handshake completes, then the server closes that socket; the session goes on
  const again = new WebSocket(`${WS_URL}/engine.io/?EIO=4&transport=websocket&sid=${sid}`);
  let errored = null;
  again.on('error', (e) => { errored = e; });
  let opened = false;
  again.on('open', () => { opened = true; });
  await new Promise((r) => again.on('close', r));
  assert.equal(errored, null, `no error, a close: ${errored}`);
  assert.ok(opened, 'the second WebSocket was opened before it was closed');
  s.send('4still here');
  assert.equal(await s.next(), '4still here');
  // an id that never was is still refused
  const unknown = new WebSocket(`${WS_URL}/engine.io/?EIO=4&transport=websocket&sid=nope`);
  const refused = await new Promise((r) => {
    unknown.on('unexpected-response', (_req, res) => r(res.statusCode));
    unknown.on('error', () => {});
  });
  assert.equal(refused, 400);
  s.close();
});

test('socket.io: a session that joins no namespace is closed; leaving the last one keeps the session', { timeout: 30000 }, async () => {
  const idle = rawSocket('/socket.io/?EIO=4&transport=websocket');
  assert.ok((await idle.next()).startsWith('0'));
  await idle.closed; // connectTimeout (1 s in the example)

  const { s } = await sioSession();
  s.send('41');
  s.send('40');
  assert.ok((await s.next()).startsWith('40{"sid"'), 'the engine session is still open: CONNECT again');
  assert.equal(await s.next(), '42["auth",{}]');
  s.close();
});
