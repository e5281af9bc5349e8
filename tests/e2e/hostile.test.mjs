// Hostile networks, end to end: Debian's nginx on loopback as a reverse proxy that drops the
// WebSocket Upgrade header, and as one that buffers responses; and a TCP proxy written here
// that cuts every connection mid-stream, again and again, as a VPN switch does. Clients must
// still receive every event, once each, in order.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import zlib from 'node:zlib';
import { io } from 'socket.io-client';
import {
  CMEM_BIN, startServer, closeAllClients, publishMany, sioClient, sseClient, pollClient, until, exactly,
} from './lib.mjs';
import { nginx, cuttingProxy, stopProxies } from './proxies.mjs';

const servers = [];
const stoppers = [];
after(async () => {
  await closeAllClients();
  for (const stop of stoppers) await stop();
  await stopProxies();
  for (const s of servers) await s.stop('SIGKILL');
});

test('behind a proxy that drops Upgrade, the official client stays on polling and gets every event; doctor names the cause', { timeout: 90000 }, async () => {
  const s = await startServer();
  servers.push(s);
  const via = await nginx(s.port, { forwardUpgrade: false, buffering: false });

  // a WebSocket-only client cannot get through this proxy at all
  const wsOnly = await new Promise((resolve) => {
    const c = io(via, { forceNew: true, reconnection: false, transports: ['websocket'], timeout: 3000 });
    c.on('connect', () => { c.close(); resolve('connected'); });
    c.on('connect_error', (e) => { c.close(); resolve(e.message); });
  });
  assert.notEqual(wsOnly, 'connected', 'the proxy really drops the upgrade');

  const clients = [
    sioClient(via, { name: 'default-behind-proxy' }), // polling first, then tries to upgrade
    sseClient(via, { name: 'sse-behind-proxy' }),
    pollClient(via, { clientId: 'poll-behind-proxy', name: 'poll-behind-proxy' }),
  ];
  await clients[0].connected();
  await clients[1].opened();
  await until(() => clients.every((c) => c.ofType('system_status').length >= 1 || (c.responses ?? 0) >= 1), 'subscribed');
  const ids = await publishMany(s.url, 60, 'up');
  await until(() => clients.every((c) => c.tests('up').length === 60), 'every event through the proxy', 30000);
  for (const c of clients) exactly(c, ids, 'up');
  assert.equal(clients[0].transport(), 'polling', 'the upgrade failed, polling carried everything');

  // cmem doctor, pointed at the proxy, says which transports work and why WebSocket does not
  const out = await new Promise((resolve) => {
    execFile(CMEM_BIN, ['doctor', '--url', via, '--json', '--data', s.data, '--bind', '127.0.0.1:0'],
      { env: { ...process.env, RUST_LOG: 'warn' } },
      (err, stdout) => resolve({ code: err ? err.code : 0, stdout }));
  });
  assert.equal(out.code, 1, 'doctor exits 1 when a transport fails');
  const report = JSON.parse(out.stdout);
  const probe = Object.fromEntries(report.selftest.map((p) => [p.transport, p]));
  assert.equal(probe.websocket.ok, false);
  assert.match(probe.websocket.detail, /upgrade refused|Upgrade/i);
  for (const t of ['http', 'polling', 'sse', 'poll']) assert.equal(probe[t].ok, true, `${t}: ${probe[t].detail}`);
  assert.ok(report.advice.some((a) => /fall back to polling/.test(a)), JSON.stringify(report.advice));
});

/** An SSE reader that accepts gzip, as browsers do, and decodes as bytes arrive. */
function gzipSse(url) {
  const rec = { text: '', encoding: null };
  const req = http.get(`${url}/api/events/stream`, { headers: { 'accept-encoding': 'gzip' } }, (res) => {
    rec.encoding = res.headers['content-encoding'] || 'identity';
    const body = rec.encoding === 'gzip' ? res.pipe(zlib.createGunzip()) : res;
    body.on('data', (d) => { rec.text += d; });
    body.on('error', () => {});
  });
  req.on('error', () => {});
  rec.close = () => req.destroy();
  stoppers.push(async () => rec.close());
  return rec;
}

// nginx buffering and compressing responses, as many proxies do, holds a stream's bytes until
// a buffer fills: an event would wait for kilobytes of later events. The server's
// `X-Accel-Buffering: no` turns that off per response. (Checked by hand: with nginx told to
// ignore that header, this test's events never arrive.)
test('behind a buffering, compressing nginx, SSE still delivers each event at once', { timeout: 60000 }, async () => {
  // a long heartbeat, so nothing but the event itself could push it through a buffer
  const s = await startServer({ env: { CM_SSE_HEARTBEAT_S: '120' } });
  servers.push(s);
  const via = await nginx(s.port, { forwardUpgrade: true, buffering: true });
  const reader = gzipSse(via);
  await until(() => reader.encoding !== null, 'response headers through the proxy');
  assert.equal(reader.encoding, 'gzip', 'the proxy compresses this stream (so it would buffer it)');
  const sse = sseClient(via, { name: 'sse-buffered' });
  await sse.opened();
  for (let i = 0; i < 3; i++) {
    const [id] = await publishMany(s.url, 1, `b${i}`);
    // `id: <epoch>:<id>`
    await until(() => new RegExp(`id: [0-9a-f]+:${id}\n`).test(reader.text), `event ${i} through the compressing proxy at once`, 5000);
    await until(() => sse.tests(`b${i}`).length === 1, `event ${i} to an EventSource client`, 5000);
  }
});

test('a proxy that cuts every connection several times: clients reconnect and get every event exactly once', { timeout: 120000 }, async () => {
  const s = await startServer();
  servers.push(s);
  const proxy = await cuttingProxy(s.port);
  const clients = [
    sioClient(proxy.url, { transports: ['websocket'], reconnection: true, name: 'ws-cut' }),
    sioClient(proxy.url, { transports: ['polling'], reconnection: true, name: 'polling-cut' }),
    sioClient(proxy.url, { reconnection: true, name: 'upgrade-cut' }),
    sseClient(proxy.url, { name: 'sse-cut' }),
    pollClient(proxy.url, { clientId: 'poll-cut', name: 'poll-cut', wait: 2 }),
  ];
  for (const c of clients) {
    if (c.connected) await c.connected();
    if (c.opened) await c.opened();
  }
  await until(() => clients.every((c) => c.ofType('system_status').length >= 1 || (c.responses ?? 0) >= 1), 'subscribed');
  const ids = [];
  let cut = 0;
  for (let round = 0; round < 4; round++) {
    ids.push(...await publishMany(s.url, 40, 'vpn'));
    await new Promise((r) => setTimeout(r, 150)); // some delivered, some in flight
    cut += proxy.cutAll();
  }
  ids.push(...await publishMany(s.url, 40, 'vpn'));
  assert.ok(cut >= 4 * clients.length, `connections were cut (${cut})`);
  await until(() => clients.every((c) => c.tests('vpn').length >= ids.length), 'every client caught up', 60000);
  for (const c of clients) exactly(c, ids, 'vpn');
});
