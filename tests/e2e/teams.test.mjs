// Access control end to end with the official socket.io-client, an EventSource client and a
// poll loop: tokens are checked at the Socket.IO handshake, and a user who is not a member of
// a workspace receives none of its events on any transport, live or on resume.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { io } from 'socket.io-client';
import {
  CMEM_BIN, TEST_EVENT, startServer, closeAllClients, sioClient, sseClient, pollClient,
  publish, until, tempDir,
} from './lib.mjs';

const servers = [];
after(async () => {
  await closeAllClients();
  for (const s of servers) await s.stop('SIGKILL');
});

function cmem(data, ...args) {
  return execFileSync(CMEM_BIN, [...args, '--data', data], { env: { ...process.env, RUST_LOG: 'warn' } }).toString();
}

/** alice: admin, member of eng. carol: no workspace. */
function team(data) {
  cmem(data, 'user', 'add', 'alice', '--admin');
  cmem(data, 'user', 'add', 'carol');
  cmem(data, 'workspace', 'create', 'eng');
  cmem(data, 'workspace', 'add-member', 'eng', 'alice');
  const token = (u) => JSON.parse(cmem(data, 'token', 'create', u, '--json')).token;
  return { alice: token('alice'), carol: token('carol') };
}

/** Resolves with the connect_error message, or 'connected'. */
function handshake(url, auth, transports) {
  return new Promise((resolve) => {
    const s = io(url, { forceNew: true, reconnection: false, transports, auth });
    s.on('connect', () => { s.close(); resolve('connected'); });
    s.on('connect_error', (e) => { s.close(); resolve(e.message); });
  });
}

test('Socket.IO handshakes need a valid token once users exist', { timeout: 60000 }, async () => {
  const data = tempDir();
  const { alice, carol } = team(data);
  const s = await startServer({ data });
  servers.push(s);
  for (const transports of [['websocket'], ['polling']]) {
    assert.match(await handshake(s.url, {}, transports), /authentication required/, transports[0]);
    assert.match(await handshake(s.url, { token: 'cm_0000_forged' }, transports), /not valid/, transports[0]);
    assert.equal(await handshake(s.url, { token: carol }, transports), 'connected', transports[0]);
    assert.match(await handshake(s.url, { token: carol, workspaces: ['eng'] }, transports),
      /not a member of workspace `eng`/, transports[0]);
  }
  // revoking over the admin API closes the live socket with the reason, and refuses new ones
  const live = sioClient(s.url, { transports: ['websocket'], extraAuth: { token: carol }, name: 'carol-live' });
  await live.connected();
  const closes = [];
  live.socket.on('cmem_close', (m) => closes.push(m));
  const tokens = await (await fetch(`${s.url}/api/admin/tokens?user=carol`, { headers: { authorization: `Bearer ${alice}` } })).json();
  const res = await fetch(`${s.url}/api/admin/tokens/${tokens.data[0].id}/revoke`, {
    method: 'POST', headers: { authorization: `Bearer ${alice}` },
  });
  assert.equal(res.status, 200);
  await until(() => closes.length === 1, 'cmem_close on revocation');
  assert.equal(closes[0].reason, 'token_revoked');
  await until(() => !live.socket.connected, 'the revoked socket is disconnected');
  assert.match(await handshake(s.url, { token: carol }, ['websocket']), /revoked/);
});

test('a non-member receives none of a workspace\'s events on any transport, live or on resume', { timeout: 60000 }, async () => {
  const data = tempDir();
  const { alice, carol } = team(data);
  const s = await startServer({ data });
  servers.push(s);
  const carolClients = () => [
    sioClient(s.url, { transports: ['websocket'], extraAuth: { token: carol }, name: 'carol-ws', cursor: cursors.ws }),
    sioClient(s.url, { transports: ['polling'], extraAuth: { token: carol }, name: 'carol-polling', cursor: cursors.polling }),
    sseClient(s.url, { name: 'carol-sse', query: `token=${carol}`, cursor: cursors.sse }),
    pollClient(s.url, { clientId: 'carol-poll', name: 'carol-poll', query: `token=${carol}`, cursor: cursors.poll }),
  ];
  const cursors = { ws: null, polling: null, sse: null, poll: null };
  let clients = carolClients();
  const aliceClient = sioClient(s.url, { transports: ['websocket'], extraAuth: { token: alice }, name: 'alice' });
  await aliceClient.connected();
  await Promise.all(clients.slice(0, 2).map((c) => c.connected()));
  await clients[2].opened();

  const round = async (tag) => {
    const evs = [];
    for (let i = 0; i < 5; i++) evs.push({ type: TEST_EVENT, scope: 'workspace:eng', data: { tag: `${tag}-eng`, i } });
    evs.push({ type: TEST_EVENT, data: { tag: `${tag}-marker` } });
    return publish(s.url, evs, alice);
  };
  await round('live');
  await until(() => clients.every((c) => c.tests('live-marker').length === 1), 'carol clients get the live marker');
  await until(() => aliceClient.tests('live-eng').length === 5, 'alice gets the workspace events');
  for (const c of clients) assert.equal(c.tests('live-eng').length, 0, `${c.name} saw workspace events live`);

  // away while more workspace events happen; back with cursors
  cursors.ws = clients[0].cursor; cursors.polling = clients[1].cursor;
  cursors.sse = clients[2].cursor; cursors.poll = clients[3].cursor;
  for (const c of clients) await c.close();
  await round('away');
  clients = carolClients();
  await until(() => clients.every((c) => c.tests('away-marker').length === 1), 'carol clients resume to the marker');
  for (const c of clients) {
    assert.equal(c.tests('away-eng').length, 0, `${c.name} got workspace events on resume`);
    assert.equal(c.tests('live-marker').length, 0, `${c.name} resumed after its cursor`);
  }
  // and carol cannot post there
  await assert.rejects(publish(s.url, [{ type: TEST_EVENT, scope: 'workspace:eng' }], carol), /403/);
});
