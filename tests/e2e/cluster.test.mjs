// Cluster mode from a client's side: two cmem nodes share one journal on NATS JetStream
// (Debian's nats-server, started here). The JavaScript client library, given both nodes' URLs,
// stays on the first; when that node is SIGKILLed mid-stream it moves to the other and resumes
// from its cursor: every event once, in id order, none lost. Behind nginx with the shipped
// configuration (deploy/nginx/cmem-cluster.conf), Engine.IO long-polling sessions stay on one
// node while publishes go to both, and a client whose node dies resumes through nginx. Three
// NATS servers and three nodes: clients of every transport, spread over the nodes, get the
// events published on every node once, in one order. Team state is the cluster's: users made
// with the command line on one node's folder sign in on every node, a token revoked on one
// node closes its connection on another, a member removed on one node stops receiving the
// workspace on another, and a message retried on another node is stored once. Presence: a
// user online on two nodes joins once, and leaves once, within the node timeout, when the
// node that had them is SIGKILLed.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from '@collective-memory/client';
import { CMEM_BIN, startServer, publish, until, sleep, tempDir, sioClient, sseClient, pollClient, exactly, fence, closeAllClients, TEST_EVENT } from './lib.mjs';
import { startNginx, stopProxies } from './proxies.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

const servers = [];
const clients = [];
let natsServer = null;
const natsCluster = [];
after(async () => {
  for (const n of natsCluster) n.kill('SIGKILL');
  for (const c of clients) c.close();
  await closeAllClients();
  await stopProxies();
  for (const s of servers) await s.stop('SIGKILL');
  natsServer?.kill('SIGKILL');
});

function freePort() {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
  });
}

/** One nats-server with JetStream for the whole file (each test uses its own stream). */
let natsStarted = null;
const natsOnce = () => (natsStarted ??= nats());

async function nats() {
  const port = await freePort();
  natsServer = spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', tempDir()], { stdio: 'ignore' });
  const url = `nats://127.0.0.1:${port}`;
  await until(() => new Promise((r) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); r(true); });
    s.on('error', () => r(false));
  }), 'nats-server listening');
  return url;
}

/** Two cmem nodes on the stream `stream`, behind nginx with the shipped configuration. */
async function twoNodesBehindNginx(stream) {
  const url = await natsOnce();
  const node = async (name) => {
    const s = await startServer({ args: ['--cluster-nats-url', url, '--node-name', name, '--cluster-stream', stream] });
    servers.push(s);
    return s;
  };
  const a = await node(`${stream}-a`);
  const b = await node(`${stream}-b`);
  const shipped = readFileSync(path.resolve(here, '../../deploy/nginx/cmem-cluster.conf'), 'utf8');
  const via = await startNginx((port) => shipped
    .replaceAll('127.0.0.1:8001', `127.0.0.1:${a.port}`)
    .replaceAll('127.0.0.1:8002', `127.0.0.1:${b.port}`)
    .replace('listen 8080;', `listen 127.0.0.1:${port};`));
  return { a, b, via };
}

/**
 * Three nodes on the stream `stream` with a team made by the command line on the first node's
 * folder (so it goes through the cluster's team log): alice (admin), bob and carol, all in eng.
 */
async function teamCluster(stream) {
  const natsUrl = await natsOnce();
  const env = { ...process.env, RUST_LOG: 'warn', CM_CLUSTER_NATS_URL: natsUrl, CM_CLUSTER_STREAM: stream };
  const first = tempDir();
  const cmem = (...args) => execFileSync(CMEM_BIN, [...args, '--data', first], { env }).toString();
  cmem('user', 'add', 'alice', '--admin');
  cmem('workspace', 'create', 'eng');
  for (const u of ['bob', 'carol']) cmem('user', 'add', u);
  const tokens = {};
  for (const u of ['alice', 'bob', 'carol']) {
    cmem('workspace', 'add-member', 'eng', u);
    tokens[u] = JSON.parse(cmem('token', 'create', u, '--json'));
  }
  const nodes = [];
  for (const [i, data] of [first, tempDir(), tempDir()].entries()) {
    const s = await startServer({ data, args: ['--cluster-nats-url', natsUrl, '--node-name', `${stream}-${i}`, '--cluster-stream', stream] });
    servers.push(s);
    nodes.push(s);
  }
  return { tokens, nodes };
}

test('SIGKILL the node a client is on: it moves to the other node and resumes, nothing lost or doubled', { timeout: 90000 }, async () => {
  const natsUrl = await natsOnce();
  const node = async (name) => {
    const s = await startServer({ args: ['--cluster-nats-url', natsUrl, '--node-name', name] });
    servers.push(s);
    return s;
  };
  const a = await node('a');
  const b = await node('b');
  const c = connect([a.url, b.url], { connectTimeoutMs: 3000, backoff: { initialMs: 100, maxMs: 1000 } });
  clients.push(c);
  const got = [];
  c.on('event', (e) => { if (e.type === TEST_EVENT && e.data.tag === 'ha') got.push(e.id); });
  await c.whenConnected();
  assert.equal(c.node, `${a.url}/`, 'the first node in the list');

  const ids = [];
  const publishSome = async (n) => {
    for (let i = 0; i < n; i += 10) {
      const evs = Array.from({ length: 10 }, (_, j) => ({ type: TEST_EVENT, data: { tag: 'ha', seq: i + j } }));
      ids.push(...(await publish(b.url, evs)));
      await sleep(20);
    }
  };
  await publishSome(100);
  await until(() => got.length >= 50, 'the client receives through node a');
  const killedAt = Date.now();
  await a.stop('SIGKILL');
  await publishSome(100);
  await until(() => got.length >= ids.length, `all ${ids.length} events (have ${got.length})`, 30000);
  assert.equal(c.node, `${b.url}/`, 'moved to the other node');
  assert.deepEqual(got, ids, 'every event once, in id order');
  const moves = c.history.filter((h) => h.state === 'reconnecting');
  assert.ok(moves.some((h) => h.node === `${b.url}/` && h.delay_ms === 0), 'the other node is tried at once');
  const back = c.history.find((h) => h.state === 'connected' && h.node === `${b.url}/`);
  console.log(`failover: connected to the other node ${back.at - killedAt} ms after the SIGKILL (over ${back.transport})`);
});

test('behind nginx with deploy/nginx/cmem-cluster.conf: long-polling stays on one node, publishes reach both, a dead node is routed around', { timeout: 90000 }, async () => {
  const { a, b, via } = await twoNodesBehindNginx('BEHIND');

  // the official client over long-polling only: its session's requests must all reach one node
  const sio = sioClient(via, { transports: ['polling'], name: 'sio-polling' });
  await sio.connected();
  // publishes through nginx go to either node (round robin)
  const ids = [];
  for (let i = 0; i < 10; i++) ids.push(...(await publish(via, [{ type: TEST_EVENT, data: { tag: 'lb', seq: i } }])));
  await until(() => sio.tests('lb').length >= 10, 'the polling client gets every event');
  exactly(sio, ids, 'lb');
  assert.equal(sio.transport(), 'polling');
  sio.close();

  // the client library over long-polling: kill the node it is on, nginx routes it to the other
  const c = connect(via, { transports: ['polling'], connectTimeoutMs: 3000, backoff: { initialMs: 100, maxMs: 1000 } });
  clients.push(c);
  const got = [];
  c.on('event', (e) => { if (e.type === TEST_EVENT && e.data.tag === 'lb2') got.push(e.id); });
  await c.whenConnected();
  const counts = await Promise.all([a, b].map(async (s) => (await (await fetch(`${s.url}/api/websocket/status`)).json()).data.connections.by_transport.polling ?? 0));
  const [mine, other] = counts[0] > 0 ? [a, b] : [b, a];
  const more = [];
  for (let i = 0; i < 5; i++) more.push(...(await publish(other.url, [{ type: TEST_EVENT, data: { tag: 'lb2', seq: i } }])));
  await until(() => got.length >= 5, 'events through nginx before the kill');
  await mine.stop('SIGKILL');
  for (let i = 5; i < 10; i++) more.push(...(await publish(other.url, [{ type: TEST_EVENT, data: { tag: 'lb2', seq: i } }])));
  await until(() => got.length >= 10, `all 10 through nginx after the kill (have ${got.length})`, 30000);
  assert.deepEqual(got, more, 'every event once, in order');
});

test('the official client recovers its Socket.IO session on another node: the nodes share the recovery key', { timeout: 90000 }, async () => {
  const { a, b, via } = await twoNodesBehindNginx('RECOVER');
  const rec = sioClient(via, { transports: ['websocket'], reconnection: true, name: 'sio-recover' });
  await rec.connected();
  const counts = await Promise.all([a, b].map(async (s) => (await (await fetch(`${s.url}/api/websocket/status`)).json()).data.connections.by_transport.websocket ?? 0));
  const [mine, other] = counts[0] > 0 ? [a, b] : [b, a];
  const ids = [];
  for (let i = 0; i < 5; i++) ids.push(...(await publish(other.url, [{ type: TEST_EVENT, data: { tag: 'rec', seq: i } }])));
  await until(() => rec.tests('rec').length >= 5, 'events before the kill');
  await mine.stop('SIGKILL');
  for (let i = 5; i < 10; i++) ids.push(...(await publish(other.url, [{ type: TEST_EVENT, data: { tag: 'rec', seq: i } }])));
  await until(() => rec.tests('rec').length >= 10, 'every event after the other node took the session over', 30000);
  exactly(rec, ids, 'rec');
  assert.equal(rec.socket.recovered, true, 'the session was recovered, not started anew');
  assert.equal(rec.tests('resync').length, 0);
});

test('three NATS servers, three cmem nodes: clients of every transport spread over the nodes get every event of every node once, in one order', { timeout: 120000 }, async () => {
  const ports = [];
  for (let i = 0; i < 3; i++) ports.push([await freePort(), await freePort()]);
  const routes = ports.map(([, c]) => `nats://127.0.0.1:${c}`).join(',');
  ports.forEach(([p, c], i) => natsCluster.push(spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', String(p), '-n', `n${i}`,
    '--cluster_name', 'e2e', '--cluster', `nats://127.0.0.1:${c}`, '--routes', routes, '-sd', tempDir()], { stdio: 'ignore' })));
  const urls = ports.map(([p]) => `nats://127.0.0.1:${p}`);
  // each node talks to its own NATS server first; the stream has 3 replicas
  const nodes = [];
  for (let i = 0; i < 3; i++) {
    const list = [urls[i], urls[(i + 1) % 3], urls[(i + 2) % 3]].join(',');
    const s = await startServer({ args: ['--cluster-nats-url', list, '--cluster-replicas', '3', '--cluster-stream', 'THREE', '--node-name', `c${i}`] });
    servers.push(s);
    nodes.push(s);
  }
  const clients = [
    sioClient(nodes[0].url, { transports: ['websocket'], name: 'ws@c0' }),
    sseClient(nodes[0].url, { name: 'sse@c0' }),
    sioClient(nodes[1].url, { transports: ['polling'], name: 'polling@c1' }),
    pollClient(nodes[1].url, { clientId: 'poll-c1', name: 'poll@c1' }),
    sioClient(nodes[2].url, { transports: ['websocket'], name: 'ws@c2' }),
    sseClient(nodes[2].url, { name: 'sse@c2' }),
  ];
  await Promise.all(clients.map((c) => (c.connected ? c.connected() : c.opened ? c.opened() : null)));
  // the poll client starts from now once its first page is answered
  await until(() => clients[3].responses > 0, 'the poll client answered once');
  const ids = [];
  for (let round = 0; round < 20; round++) {
    for (const n of nodes) ids.push(...(await publish(n.url, [{ type: TEST_EVENT, data: { tag: 'three', round } }])));
  }
  ids.sort((x, y) => x - y);
  await until(() => clients.every((c) => c.tests('three').length >= ids.length), 'every client has every event', 30000);
  for (const c of clients) exactly(c, ids, 'three');
  for (const c of clients) await c.close();
});

test('team state is the cluster\'s: a token revoked on node A closes its connection on node C; a member removed on node B stops receiving the workspace on node A', { timeout: 90000 }, async () => {
  const { tokens, nodes: [a, b, c] } = await teamCluster('TEAMX');
  const { alice: { token: alice }, bob: { token: bob }, carol } = tokens;
  const auth = (t) => ({ authorization: `Bearer ${t}` });
  // every node knows the users made on A's folder
  for (const s of [a, b, c]) {
    const me = await (await fetch(`${s.url}/api/me`, { headers: auth(bob) })).json();
    assert.deepEqual([me.data.user, me.data.workspaces], ['bob', ['eng']], s.url);
  }

  const carolOnC = sioClient(c.url, { transports: ['websocket'], extraAuth: { token: carol.token }, name: 'carol-on-c' });
  const bobOnA = sioClient(a.url, { transports: ['websocket'], extraAuth: { token: bob, workspaces: ['eng'] }, name: 'bob-on-a' });
  const bobSse = sseClient(b.url, { name: 'bob-sse-on-b', query: `token=${bob}` });
  await Promise.all([carolOnC.connected(), bobOnA.connected(), bobSse.opened()]);
  await publish(c.url, [{ type: TEST_EVENT, scope: 'workspace:eng', data: { tag: 'eng-before' } }], alice);
  await until(() => bobOnA.tests('eng-before').length === 1 && bobSse.tests('eng-before').length === 1, 'bob gets eng events on A and B');

  // revoked over node A's admin API: carol's connection on node C closes with the reason
  const closes = [];
  carolOnC.socket.on('cmem_close', (m) => closes.push(m));
  const r = await fetch(`${a.url}/api/admin/tokens/${carol.id}/revoke`, { method: 'POST', headers: auth(alice) });
  assert.equal(r.status, 200);
  await until(() => closes.length === 1, 'cmem_close on node C', 10000);
  assert.equal(closes[0].reason, 'token_revoked');
  await until(() => !carolOnC.socket.connected, 'carol is disconnected from node C');
  assert.equal((await fetch(`${b.url}/api/me`, { headers: auth(carol.token) })).status, 401);

  // removed from eng over node B's admin API: bob's connection on node A stops receiving eng
  const removed = await fetch(`${b.url}/api/admin/workspaces/eng/members/bob`, { method: 'DELETE', headers: auth(alice) });
  assert.equal(removed.status, 200);
  await until(async () => {
    const me = await (await fetch(`${a.url}/api/me`, { headers: auth(bob) })).json();
    return me.data.workspaces.length === 0;
  }, 'node A knows bob left eng');
  // the live connection follows at once: an eng event published now, then a fence, and bob
  // on node A has the fence without the eng event
  let round = 0;
  await until(async () => {
    const tag = `eng-after-${++round}`;
    await publish(c.url, [{ type: TEST_EVENT, scope: 'workspace:eng', data: { tag } }], alice);
    await fence(c.url, [bobOnA], alice);
    return bobOnA.tests(tag).length === 0;
  }, 'node A stops sending eng to bob', 10000);
  assert.ok(round <= 3, `node A took ${round} rounds to follow the removal`);
  await publish(c.url, [{ type: TEST_EVENT, scope: 'workspace:eng', data: { tag: 'eng-late' } }], alice);
  await fence(c.url, [bobOnA, bobSse], alice);
  assert.equal(bobOnA.tests('eng-late').length, 0, 'bob on node A');
  assert.equal(bobSse.tests('eng-late').length, 0, 'bob over SSE on node B');

  // a message retried on another node (same client_msg_id) is stored once
  const send = (s) => fetch(`${s.url}/api/workspaces/eng/messages`, {
    method: 'POST', headers: { ...auth(alice), 'content-type': 'application/json' },
    body: JSON.stringify({ text: 'only once', client_msg_id: 'm-1' }),
  });
  const first = await send(a);
  const retry = await send(c);
  assert.equal(first.status, 201);
  assert.equal(retry.status, 200);
  const [m1, m2] = [await first.json(), await retry.json()];
  assert.equal(m2.data.duplicate, true);
  assert.equal(m2.data.message.id, m1.data.message.id);
  const history = await (await fetch(`${b.url}/api/workspaces/eng/messages`, { headers: auth(alice) })).json();
  assert.equal(history.data.messages.filter((m) => m.text === 'only once').length, 1);
});

test('presence across nodes: a user on two nodes joins once; a SIGKILLed node\'s users leave once, within the node timeout', { timeout: 90000 }, async () => {
  const { tokens, nodes: [a, b, c] } = await teamCluster('PRES');
  const tok = Object.fromEntries(Object.entries(tokens).map(([u, t]) => [u, t.token]));
  const kinds = ['member_joined', 'member_left', TEST_EVENT];
  // carol watches from node C
  const watch = sseClient(c.url, { name: 'carol-watch-on-c', query: `token=${tok.carol}`, types: kinds });
  await watch.opened();
  const said = (kind, user) => watch.ofType(kind).filter((e) => e.data.user === user).length;
  const online = async (s) => {
    const r = await (await fetch(`${s.url}/api/workspaces/eng/presence`, { headers: { authorization: `Bearer ${tok.alice}` } })).json();
    return Object.fromEntries(r.data.online.map((u) => [u.user, u.connections]));
  };

  // bob on nodes A and B, alice on node B
  const bobOnA = sioClient(a.url, { transports: ['websocket'], extraAuth: { token: tok.bob, workspaces: ['eng'] }, name: 'bob-on-a' });
  const bobOnB = sseClient(b.url, { name: 'bob-sse-on-b', query: `token=${tok.bob}` });
  const aliceOnB = sioClient(b.url, { transports: ['websocket'], extraAuth: { token: tok.alice, workspaces: ['eng'] }, name: 'alice-on-b' });
  await Promise.all([bobOnA.connected(), bobOnB.opened(), aliceOnB.connected()]);
  await until(() => said('member_joined', 'bob') >= 1 && said('member_joined', 'alice') >= 1, 'carol sees bob and alice join');
  // every node's view agrees: bob twice, alice and carol once
  for (const s of [a, b, c]) {
    await until(async () => JSON.stringify(await online(s)) === JSON.stringify({ alice: 1, bob: 2, carol: 1 }), `presence on ${s.url}`);
  }
  await fence(c.url, [watch], tok.alice);
  assert.equal(said('member_joined', 'bob'), 1, 'bob joined once');
  assert.equal(said('member_joined', 'alice'), 1, 'alice joined once');

  // bob leaves node A: still on node B, so no leave
  bobOnA.close();
  await until(async () => (await online(c)).bob === 1, 'node C sees bob on one node');
  await fence(c.url, [watch], tok.alice);
  assert.equal(said('member_left', 'bob'), 0);

  // node B is killed: bob and alice were only there; they leave once each, carol stays
  const killed = Date.now();
  await b.stop('SIGKILL');
  await until(() => said('member_left', 'bob') === 1 && said('member_left', 'alice') === 1, 'bob and alice leave', 30000);
  console.log(`# presence: the killed node's users left ${Date.now() - killed} ms after the SIGKILL`);
  await fence(c.url, [watch], tok.alice);
  assert.equal(said('member_left', 'bob'), 1);
  assert.equal(said('member_left', 'alice'), 1);
  assert.equal(said('member_left', 'carol'), 0);
  assert.deepEqual(await online(a), { carol: 1 });
});
