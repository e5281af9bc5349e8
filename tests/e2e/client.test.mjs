// The JavaScript client library (clients/js, @collective-memory/client) in Node, against the
// real server behind real proxies: it must settle on the transport the network allows, back
// off while the server is gone, move back up when it can, and deliver every event exactly once,
// in order, through all of it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, backoffDelay, CODES, actionOf } from '@collective-memory/client';
import { CMEM_BIN, startServer, publish, publishMany, until, sleep, tempDir, TEST_EVENT, sioClient } from './lib.mjs';
import { nginx, cuttingProxy, rulesProxy, stopProxies } from './proxies.mjs';

const servers = [];
const clients = [];
after(async () => {
  for (const c of clients) c.close();
  await stopProxies();
  for (const s of servers) await s.stop('SIGKILL');
});

/** A client that records every event and every state change. */
function client(url, opts = {}) {
  const c = connect(url, opts);
  c.events = [];
  c.states = [];
  c.on('event', (e) => c.events.push(e));
  c.on('state', (s) => c.states.push(s));
  c.tests = (tag) => c.events.filter((e) => e.type === TEST_EVENT && e.data.tag === tag);
  clients.push(c);
  return c;
}

/** Every event the client delivered has a larger id than the one before (same epoch). */
function inOrder(c) {
  for (let i = 1; i < c.events.length; i++) {
    const [a, b] = [c.events[i - 1], c.events[i]];
    if (a.epoch === b.epoch) assert.ok(b.id > a.id, `${a.id} then ${b.id}: not in order / repeated`);
  }
}

/** The client holds exactly `ids` with `tag`, in order, once each. */
function exactlyOnce(c, ids, tag) {
  const got = c.tests(tag).map((e) => e.id);
  const dup = got.filter((id, i) => got.indexOf(id) !== i);
  const missing = ids.filter((id) => !got.includes(id));
  assert.deepEqual({ dup, missing: missing.slice(0, 10), n: got.length }, { dup: [], missing: [], n: ids.length });
  assert.deepEqual(got, ids);
  inOrder(c);
}

/** Publishes `n` events in batches of `batch`, `gapMs` apart; resolves with their ids. */
async function publishSlowly(url, n, tag, { batch = 10, gapMs = 40 } = {}) {
  const ids = [];
  for (let i = 0; i < n; i += batch) {
    const evs = [];
    for (let j = i; j < Math.min(n, i + batch); j++) evs.push({ type: TEST_EVENT, data: { tag, seq: j } });
    ids.push(...(await publish(url, evs)));
    await sleep(gapMs);
  }
  return ids;
}

const quick = { connectTimeoutMs: 3000, backoff: { initialMs: 100, maxMs: 1000 } };

test('backoff: full jitter below an exponential bound that is capped', () => {
  const b = { initialMs: 500, factor: 2, maxMs: 30000 };
  assert.equal(backoffDelay(0, b, () => 0.999999), 499);
  assert.equal(backoffDelay(3, b, () => 0.5), 2000);
  assert.equal(backoffDelay(10, b, () => 0.999999), 29999);
  assert.equal(backoffDelay(1000, b, () => 0.5), 15000);
  assert.equal(backoffDelay(4, b, () => 0), 0);
});

test('each transport alone delivers every event once, in order, and sends a message', { timeout: 60000 }, async () => {
  const s = await startServer();
  servers.push(s);
  for (const t of ['websocket', 'polling', 'sse', 'poll']) {
    const c = client(s.url, { transports: [t], workspaces: ['eng'] });
    await c.whenConnected();
    assert.equal(c.transport, t);
    const ids = await publishMany(s.url, 40, `alone-${t}`);
    await until(() => c.tests(`alone-${t}`).length === 40, `${t} receives`);
    exactlyOnce(c, ids, `alone-${t}`);
    assert.deepEqual(c.cursor, { epoch: c.events.at(-1).epoch, id: c.events.at(-1).id });
    const ack = await c.send('team_message', { workspace: 'eng', text: `over ${t}` });
    assert.equal(ack.ok, true);
    assert.equal(ack.message.text, `over ${t}`);
    await until(() => c.events.some((e) => e.type === 'team_message' && e.data.text === `over ${t}`), `${t}: own message back`);
    c.close();
  }
});

test('behind nginx that drops Upgrade the client settles on polling', { timeout: 60000 }, async () => {
  const s = await startServer();
  servers.push(s);
  const via = await nginx(s.port, { forwardUpgrade: false, buffering: false });
  const c = client(via, quick);
  await until(() => c.state === 'connected', 'connected through nginx', 30000);
  assert.equal(c.transport, 'polling');
  assert.ok(c.states.some((x) => x.error?.transport === 'websocket'), 'websocket was tried first and failed');
  const ids = await publishSlowly(s.url, 200, 'nginx');
  await until(() => c.tests('nginx').length === 200, 'every event through nginx', 30000);
  exactlyOnce(c, ids, 'nginx');
  assert.equal(c.transport, 'polling');
});

test('a proxy that answers 403 under /socket.io/ → SSE', { timeout: 60000 }, async () => {
  const s = await startServer();
  servers.push(s);
  const proxy = await rulesProxy(s.port, { blockSocketIo: true });
  const c = client(proxy.url, quick);
  await until(() => c.state === 'connected', 'connected through the proxy', 30000);
  assert.equal(c.transport, 'sse');
  assert.ok(proxy.refused >= 2, 'Socket.IO was tried and refused');
  const failed = new Set(c.states.filter((x) => x.error).map((x) => x.error.transport));
  assert.deepEqual([...failed].sort(), ['polling', 'websocket']);
  assert.ok(c.states.some((x) => x.error?.code === 'forbidden'), 'the 403 is reported as forbidden');
  const ids = await publishSlowly(s.url, 200, 'p403');
  await until(() => c.tests('p403').length === 200, 'every event over SSE', 30000);
  exactlyOnce(c, ids, 'p403');
});

test('a proxy that blocks /socket.io/ and holds event streams → plain poll', { timeout: 60000 }, async () => {
  const s = await startServer();
  servers.push(s);
  const proxy = await rulesProxy(s.port, { blockSocketIo: true, holdStreams: true });
  const c = client(proxy.url, { ...quick, connectTimeoutMs: 1500 });
  await until(() => c.state === 'connected' && c.transport === 'poll', 'settled on poll', 40000);
  assert.ok(proxy.held >= 1, 'an event stream was held by the proxy');
  assert.ok(c.states.some((x) => x.error?.transport === 'sse' && x.error.code === 'timeout'), 'SSE timed out');
  const ids = await publishSlowly(s.url, 200, 'held');
  await until(() => c.tests('held').length === 200, 'every event over poll', 30000);
  exactlyOnce(c, ids, 'held');
});

test('a TCP proxy cutting every connection every 2 s while 500 events are published', { timeout: 120000 }, async () => {
  const s = await startServer();
  servers.push(s);
  const cut = await cuttingProxy(s.port);
  const opts = { ...quick, stableAfterMs: 1000 };
  const cs = [client(cut.url, opts), ...['websocket', 'polling', 'sse', 'poll'].map((t) => client(cut.url, { ...opts, transports: [t] }))];
  await until(() => cs.every((c) => c.state === 'connected'), 'all connected');
  let cuts = 0;
  const cutter = setInterval(() => { cut.cutAll(); cuts++; }, 2000);
  let ids;
  try {
    ids = await publishSlowly(s.url, 500, 'cut', { batch: 5, gapMs: 100 });
    await until(() => cs.every((c) => c.tests('cut').length >= 500), 'every event through the cuts', 60000);
  } finally {
    clearInterval(cutter);
  }
  assert.ok(cuts >= 3, `cut ${cuts} times`);
  for (const c of cs) {
    exactlyOnce(c, ids, 'cut');
    assert.ok(c.states.filter((x) => x.state === 'reconnecting').length >= 2, `${c.transport}: was cut and came back`);
  }
});

test('server killed for 20 s: jittered, growing, capped attempts, then resume with nothing lost', { timeout: 120000 }, async () => {
  const s = await startServer();
  servers.push(s);
  const backoff = { initialMs: 250, factor: 2, maxMs: 4000 };
  const c = client(s.url, { backoff, connectTimeoutMs: 2000 });
  await c.whenConnected();
  const before = await publishMany(s.url, 50, 'kill');
  await until(() => c.tests('kill').length === 50, 'events before the kill');
  await s.stop('SIGKILL');
  const downAt = Date.now();
  await sleep(20000);
  const attempts = c.states.filter((x) => x.state === 'reconnecting' && x.error && x.at >= downAt);
  // restart on the same port and data folder; publish at once, before the client is back
  const s2 = await startServer({ data: s.data, port: s.port });
  servers.push(s2);
  const during = await publishMany(s2.url, 50, 'kill');
  await until(() => c.tests('kill').length >= 100, 'resumed after the restart', 30000);
  const later = await publishMany(s2.url, 50, 'kill');
  await until(() => c.tests('kill').length >= 150, 'live after the restart', 30000);
  exactlyOnce(c, [...before, ...during, ...later], 'kill');

  // the schedule: every delay below its bound min(max, initial × 2^(attempt-1)), the bound
  // grows to the cap, and the delays are random (full jitter), not the bound itself
  assert.ok(attempts.length >= 5, `${attempts.length} attempts in 20 s`);
  for (const a of attempts) {
    const bound = Math.min(backoff.maxMs, backoff.initialMs * 2 ** (a.attempt - 1));
    assert.ok(a.delay_ms >= 0 && a.delay_ms < bound, `attempt ${a.attempt}: ${a.delay_ms} ms, bound ${bound}`);
  }
  assert.ok(attempts.some((a) => a.attempt >= 6), 'attempts reached the cap');
  // a move to the next transport is tried at once; a retry of the same one waits a random delay
  for (const a of attempts.filter((x) => x.transport !== x.error.transport)) assert.equal(a.delay_ms, 0);
  const retries = attempts.filter((x) => x.transport === x.error.transport);
  assert.ok(retries.length >= 4, `${retries.length} retries of one transport`);
  const distinct = new Set(retries.map((a) => a.delay_ms));
  assert.ok(distinct.size >= retries.length - 1, 'delays are jittered');
  // it never gave up: attempts kept coming until the end of the outage
  const last = attempts.at(-1);
  assert.ok(last.at >= downAt + 20000 - backoff.maxMs - 2500, 'still trying at the end of the outage');
});

test('moves back up from poll to websocket when the proxy stops blocking, mid-stream', { timeout: 90000 }, async () => {
  const s = await startServer();
  servers.push(s);
  const proxy = await rulesProxy(s.port, { blockSocketIo: true, holdStreams: true });
  const c = client(proxy.url, { ...quick, connectTimeoutMs: 1500, probeIntervalMs: 1500 });
  await until(() => c.state === 'connected' && c.transport === 'poll', 'on poll', 40000);
  const publishing = publishSlowly(s.url, 300, 'up', { batch: 5, gapMs: 30 });
  await sleep(500);
  proxy.rules = { blockSocketIo: false, holdStreams: false };
  const ids = await publishing;
  await until(() => c.transport === 'websocket' && c.state === 'connected', 'back on websocket', 30000);
  await until(() => c.tests('up').length >= 300, 'every event across the switch', 30000);
  exactlyOnce(c, ids, 'up');
  assert.ok(c.states.some((x) => x.upgraded_from === 'poll' && x.transport === 'websocket'), 'moved from poll to websocket in one step');
  // a fence after the switch: nothing more arrives twice
  const fence = await publishMany(s.url, 1, 'up-fence');
  await until(() => c.tests('up-fence').length === 1, 'the fence');
  exactlyOnce(c, fence, 'up-fence');
});

test('send retries a team message with one client_msg_id until acknowledged', { timeout: 60000 }, async () => {
  const s = await startServer();
  servers.push(s);
  const cut = await cuttingProxy(s.port);
  const c = client(cut.url, { ...quick, transports: ['websocket'] });
  await c.whenConnected();
  // cut the connection right after sending: the ack is lost, the client resends after reconnecting
  const sent = c.send('team_message', { workspace: 'eng', text: 'once', client_msg_id: 'fixed-1' });
  cut.cutAll();
  const ack = await sent;
  assert.equal(ack.ok, true);
  const page = await (await fetch(`${s.url}/api/workspaces/eng/messages?limit=50`)).json();
  assert.equal(page.data.messages.filter((m) => m.client_msg_id === 'fixed-1').length, 1, 'stored once');
});

test('with users: /client/ is public, tokens work on every transport, a bad one is reported', { timeout: 60000 }, async () => {
  const data = tempDir();
  const cmem = (...args) => execFileSync(CMEM_BIN, [...args, '--data', data], { env: { ...process.env, RUST_LOG: 'warn' } }).toString();
  cmem('user', 'add', 'alice', '--admin');
  cmem('workspace', 'create', 'eng');
  cmem('workspace', 'add-member', 'eng', 'alice');
  const token = JSON.parse(cmem('token', 'create', 'alice', '--json')).token;
  const s = await startServer({ data });
  servers.push(s);

  // the library as the server serves it: the file in the repo, no token needed, revalidated
  const here = path.dirname(fileURLToPath(import.meta.url));
  const res = await fetch(`${s.url}/client/index.js`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/javascript/);
  assert.equal(await res.text(), readFileSync(path.join(here, '../../clients/js/src/index.js'), 'utf8'));
  const again = await fetch(`${s.url}/client/index.js`, { headers: { 'if-none-match': res.headers.get('etag') } });
  assert.equal(again.status, 304);
  assert.equal((await fetch(`${s.url}/client/`)).status, 200);
  const missing = await fetch(`${s.url}/client/secrets.json`);
  assert.equal(missing.status, 404);
  assert.match((await missing.json()).error, /index\.js/);

  for (const t of ['websocket', 'polling', 'sse', 'poll']) {
    const c = client(s.url, { transports: [t], token, workspaces: ['eng'] });
    await c.whenConnected();
    const ids = await publish(s.url, [{ type: TEST_EVENT, scope: 'workspace:eng', data: { tag: `tok-${t}` } }], token);
    await until(() => c.tests(`tok-${t}`).length === 1, `${t}: the workspace event`);
    exactlyOnce(c, ids, `tok-${t}`);
    c.close();
  }
  const bad = client(s.url, { ...quick, token: 'cm_nope_nope' });
  await until(() => new Set(bad.states.filter((x) => x.error?.code === 'unauthorized').map((x) => x.error.transport)).size === 4,
    'every transport reports the bad token', 30000);
  assert.notEqual(bad.state, 'connected');
});

test('in Node the cursor and the last good transport persist in a file: the next run resumes there', { timeout: 60000 }, async () => {
  const s = await startServer();
  servers.push(s);
  const proxy = await rulesProxy(s.port, { blockSocketIo: true });
  const file = path.join(tempDir(), 'cursor.json');
  const a = client(proxy.url, { ...quick, storage: file });
  await until(() => a.state === 'connected', 'first run connected', 30000);
  assert.equal(a.transport, 'sse');
  const first = await publishMany(s.url, 10, 'file-1');
  await until(() => a.tests('file-1').length === 10, 'first run receives');
  a.close();
  const saved = JSON.parse(readFileSync(file, 'utf8'));
  const last = a.events.at(-1);
  assert.deepEqual(saved, { cursor: `${last.epoch}:${last.id}`, transport: 'sse' });
  exactlyOnce(a, first, 'file-1');

  const missed = await publishMany(s.url, 10, 'file-2');
  const b = client(proxy.url, { ...quick, storage: file });
  await until(() => b.tests('file-2').length === 10, 'the next run gets what it missed');
  assert.equal(b.states[0].transport, 'sse', 'the stored transport is tried first');
  assert.ok(b.states.every((x) => !x.error), 'no failed attempt on the way');
  assert.equal(b.tests('file-1').length, 0, 'nothing from the first run again');
  exactlyOnce(b, missed, 'file-2');
});

test('a connection that goes silent (frozen by the network, never closed) is presumed dead and replaced', { timeout: 60000 }, async () => {
  const s = await startServer({ args: ['--ping-interval-ms', '1000', '--ping-timeout-ms', '1000', '--sse-heartbeat-s', '1'] });
  servers.push(s);
  const net = await cuttingProxy(s.port);
  const cs = ['websocket', 'polling', 'sse', 'poll'].map((t) => client(net.url, { ...quick, transports: [t], pollWaitS: 1 }));
  await until(() => cs.every((c) => c.state === 'connected'), 'all connected');
  const before = await publishMany(s.url, 10, 'frozen');
  await until(() => cs.every((c) => c.tests('frozen').length === 10), 'events before the freeze');
  assert.ok(net.freezeAll() >= 4, 'connections frozen');
  const during = await publishMany(s.url, 10, 'frozen');
  await until(() => cs.every((c) => c.tests('frozen').length === 20), 'events published while frozen, on a new connection', 40000);
  for (const c of cs) {
    const stalled = c.states.find((x) => x.error?.code === 'stalled');
    assert.ok(stalled, `${c.transport}: the silence was noticed (${JSON.stringify(c.states.map((x) => x.error?.code))})`);
    exactlyOnce(c, [...before, ...during], 'frozen');
  }
});

test('a Node program with an open client keeps running through an outage, and moves back up to WebSocket after it', { timeout: 90000 }, async () => {
  const s = await startServer();
  servers.push(s);
  // the program a user writes: connect, print each state; nothing else keeps it alive
  const program = `
    import { connect } from '@collective-memory/client';
    const c = connect(${JSON.stringify(s.url)}, { backoff: { initialMs: 100, maxMs: 300 }, connectTimeoutMs: 2000 });
    c.on('state', (x) => console.log(JSON.stringify({ state: x.state, transport: x.transport, upgraded_from: x.upgraded_from ?? null })));
    process.on('SIGTERM', () => { c.close(); });
  `;
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, ['--input-type=module', '-e', program], { cwd: path.dirname(fileURLToPath(import.meta.url)), stdio: ['ignore', 'pipe', 'inherit'] });
  const states = [];
  let exited = null;
  child.on('exit', (code) => { exited = code; });
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      states.push(JSON.parse(buf.slice(0, i)));
      buf = buf.slice(i + 1);
    }
  });
  await until(() => states.some((x) => x.state === 'connected' && x.transport === 'websocket'), 'connected over websocket', 20000);
  await s.stop('SIGTERM');
  // down long enough for the fallback to leave WebSocket and polling behind
  await until(() => exited !== null || states.some((x) => x.state === 'reconnecting' && (x.transport === 'sse' || x.transport === 'poll')), 'the fallback to sse or poll', 30000);
  assert.equal(exited, null, 'the program ended while the server was away');
  const s2 = await startServer({ data: s.data, port: s.port });
  servers.push(s2);
  const back = states.length;
  await until(() => exited !== null || states.slice(back).some((x) => x.state === 'connected'), 'connected again', 30000);
  assert.equal(exited, null, 'the program ended');
  // it came back on a lesser transport; its probe takes it back up soon after an outage
  await until(() => states.slice(back).some((x) => x.state === 'connected' && x.transport === 'websocket'), `back on websocket (${JSON.stringify(states.slice(back))})`, 20000);
  assert.equal(exited, null);
  child.kill('SIGTERM');
  await until(() => exited !== null, 'the program to end once its client is closed', 10000);
  assert.equal(exited, 0);
});

test("README's install line, run as written, gives a Node program a working client", { timeout: 120000 }, async () => {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const root = path.resolve(here, '../..');
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
  const line = readme.match(/`(npm install [^`]*\.\/clients\/js)`/)?.[1];
  assert.ok(line, 'README names how to install the client');
  const project = tempDir();
  execFileSync('npm', ['init', '-y'], { cwd: project, stdio: 'ignore' });
  // the line as written, with the repository's folder for `./clients/js`
  const args = line.split(/\s+/).slice(1).map((a) => (a === './clients/js' ? path.join(root, 'clients/js') : a));
  execFileSync('npm', [...args, '--no-audit', '--no-fund'], { cwd: project, stdio: 'ignore' });
  const s = await startServer();
  servers.push(s);
  const program = `
    import { connect } from '@collective-memory/client';
    const c = connect(${JSON.stringify(s.url)}, { transports: ['websocket'] });
    c.on('state', (x) => { if (x.state === 'connected') { console.log('connected ' + x.transport); c.close(); } });
  `;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', program], { cwd: project, timeout: 30000 }).toString();
  assert.match(out, /connected websocket/);
});

test('the client acts on the server\'s codes, never on its words: reauthenticate, retry, give up, resync', { timeout: 120000 }, async () => {
  const data = tempDir();
  const cmem = (...args) => execFileSync(CMEM_BIN, [...args, '--data', data], { env: { ...process.env, RUST_LOG: 'warn' } }).toString();
  cmem('user', 'add', 'alice', '--admin');
  cmem('user', 'add', 'bob');
  cmem('workspace', 'create', 'ops');
  for (const u of ['alice', 'bob']) cmem('workspace', 'add-member', 'ops', u);
  const tokenOf = (u) => JSON.parse(cmem('token', 'create', u, '--json'));
  const alice = tokenOf('alice').token;
  const bob = tokenOf('bob').token;
  const bob2 = tokenOf('bob');
  let s = await startServer({ data });
  servers.push(s);

  // the table the client reads is the server's (generated from it): every code's action
  assert.equal(CODES.token_revoked.action, 'reauthenticate');
  assert.equal(CODES.forbidden.action, 'give_up');
  assert.equal(actionOf('made_up_by_a_newer_server', 503), 'retry');
  // the official client sees the code on `connect_error` as `err.data.code`
  const official = sioClient(s.url, { transports: ['websocket'], extraAuth: { token: 'cm_nope_nope' } });
  const refusal = await new Promise((resolve) => official.socket.on('connect_error', resolve));
  assert.deepEqual([refusal.data?.code, actionOf(refusal.data?.code)], ['token_invalid', 'reauthenticate']);
  official.socket.close();

  // a bad token, and a token function: asked again whenever the server says to reauthenticate
  let asked = 0;
  const renewed = client(s.url, { ...quick, token: () => (++asked === 1 ? 'cm_nope_nope' : alice) });
  await until(() => renewed.state === 'connected', 'connected with the renewed token', 30000);
  const first = renewed.states.find((x) => x.error);
  assert.deepEqual([first.error.code, first.error.reason, first.error.action], ['unauthorized', 'token_invalid', 'reauthenticate']);
  assert.equal(asked, 2, 'the function was asked once more, after token_invalid');

  // a revoked token: the close says `token_revoked`, which asks for a new token
  const revoked = client(s.url, { ...quick, token: bob2.token, transports: ['sse'] });
  await until(() => revoked.state === 'connected', 'bob connected over SSE');
  cmem('token', 'revoke', bob2.id);
  await until(() => revoked.states.some((x) => x.error?.reason === 'token_revoked'), 'the revocation reported', 15000);
  assert.equal(revoked.states.find((x) => x.error?.reason === 'token_revoked').error.action, 'reauthenticate');
  revoked.close();

  // bob reads `ops`; shutdown is a close to retry; then he is no longer in `ops`: every
  // transport refuses with `forbidden` and the client stops, saying why
  const member = client(s.url, { ...quick, token: bob, workspaces: ['ops'] });
  await until(() => member.state === 'connected', 'bob connected to ops');
  cmem('workspace', 'remove-member', 'ops', 'bob');
  await s.stop();
  s = await startServer({ data, port: s.port });
  servers.push(s);
  await until(() => member.state === 'failed', 'the client stopped', 60000);
  const shutdown = member.states.find((x) => x.error?.reason === 'server_shutdown');
  assert.ok(shutdown, 'the shutdown was reported with its code');
  assert.equal(shutdown.error.action, 'retry');
  const forbidden = new Set(member.states.filter((x) => x.error?.reason === 'forbidden').map((x) => x.error.transport));
  assert.deepEqual([...forbidden].sort(), ['poll', 'polling', 'sse', 'websocket']);
  const last = member.states.at(-1);
  assert.deepEqual([last.state, last.error.code, last.error.action], ['failed', 'forbidden', 'give_up']);
  await assert.rejects(member.whenConnected(), /ops/);
  // a new start with what is allowed connects
  member.reconnect({ workspaces: null });
  await until(() => member.state === 'connected', 'connected again without ops');

  // a cursor of another journal: a `resync` whose reason is a code that asks for one
  const other = client(s.url, { ...quick, token: alice, transports: ['poll'], from: 'not-this-journal:5' });
  await until(() => other.events.some((e) => e.type === 'resync'), 'a resync');
  const reason = other.events.find((e) => e.type === 'resync').data.reason;
  assert.deepEqual([reason, actionOf(reason)], ['epoch_mismatch', 'resync']);

  // HTTP error bodies and acks carry the code too
  const bad = await fetch(`${s.url}/api/events/poll`, { headers: { authorization: `Bearer ${alice}` } });
  const body = await bad.json();
  assert.equal(bad.status, 400);
  assert.deepEqual([body.code, typeof body.message], ['invalid', 'string']);
  const sent = await member.send('team_message', { workspace: 'ops', text: 'hi' }).catch((e) => e);
  assert.deepEqual([sent.code, sent.action], ['forbidden', 'give_up']);
});

test('a slow consumer (a frozen network under a burst) is cut by the server; the client retries and loses nothing', { timeout: 90000 }, async () => {
  const s = await startServer({
    args: ['--ping-interval-ms', '1000', '--ping-timeout-ms', '1000', '--max-payload-bytes', '2000000'],
    env: { CM_SLOW_CONSUMER_TIMEOUT_MS: '300' },
  });
  servers.push(s);
  const net = await cuttingProxy(s.port);
  const c = client(net.url, { ...quick, transports: ['websocket'] });
  await until(() => c.state === 'connected', 'connected');
  assert.ok(net.freezeAll() >= 1, 'the connection frozen');
  // some 8 MB while nothing moves: the server's writes stall and it cuts the socket
  const pad = 'p'.repeat(16000);
  const ids = [];
  for (let b = 0; b < 10; b++) {
    const events = Array.from({ length: 50 }, (_, i) => ({ type: TEST_EVENT, data: { tag: 'slow', seq: b * 50 + i, pad } }));
    ids.push(...await publish(s.url, events));
  }
  await until(async () => {
    const st = await (await fetch(`${s.url}/api/websocket/status`)).json();
    return (st.data.closes_by_reason.slow_consumer ?? 0) >= 1;
  }, 'the server cut it as a slow consumer', 30000);
  // a close with no last words (nothing more could be written): the client notices the silence
  // and retries, as the code's action says, from its cursor
  await until(() => c.tests('slow').length === ids.length, 'every event after the cut', 60000);
  exactlyOnce(c, ids, 'slow');
  assert.ok(c.states.some((x) => x.error?.code === 'stalled'), 'the silence was noticed');
  assert.equal(actionOf('slow_consumer'), 'retry', 'the table says to retry');
});
