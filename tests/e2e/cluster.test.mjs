// Cluster mode from a client's side: two cmem nodes share one journal on NATS JetStream
// (Debian's nats-server, started here). The JavaScript client library, given both nodes' URLs,
// stays on the first; when that node is SIGKILLed mid-stream it moves to the other and resumes
// from its cursor: every event once, in id order, none lost.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { connect } from '@collective-memory/client';
import { startServer, publish, until, sleep, tempDir, TEST_EVENT } from './lib.mjs';

const servers = [];
const clients = [];
let natsServer = null;
after(async () => {
  for (const c of clients) c.close();
  for (const s of servers) await s.stop('SIGKILL');
  natsServer?.kill('SIGKILL');
});

function freePort() {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
  });
}

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

test('SIGKILL the node a client is on: it moves to the other node and resumes, nothing lost or doubled', { timeout: 90000 }, async () => {
  const natsUrl = await nats();
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
