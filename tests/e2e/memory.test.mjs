// The memory end to end: a file edited while the server runs is announced to a Socket.IO
// client as `file_changed` and found by its new content; searches, status and cache clears
// reach Socket.IO and SSE clients as events.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { startServer, closeAllClients, sioClient, sseClient, until, tempDir } from './lib.mjs';

const servers = [];
after(async () => {
  await closeAllClients();
  for (const s of servers) await s.stop('SIGKILL');
});

async function search(url, q) {
  const r = await fetch(`${url}/api/search?q=${encodeURIComponent(q)}`);
  return (await r.json()).data;
}

test('an edited file is announced as file_changed and found by its new content', { timeout: 60000 }, async () => {
  const data = tempDir();
  mkdirSync(path.join(data, 'notes'));
  writeFileSync(path.join(data, 'notes', 'plan.md'), '# Plan\nnothing special yet\n');
  const s = await startServer({ data });
  servers.push(s);
  await until(async () => (await (await fetch(`${s.url}/system/indexing`)).json()).data.finished_at, 'initial indexing');
  const client = sioClient(s.url, { transports: ['websocket'], name: 'watcher' });
  await client.connected();
  await until(() => client.ofType('system_status').length === 1, 'greeting');

  assert.equal((await search(s.url, 'xylophonic')).total, 0);
  writeFileSync(path.join(data, 'notes', 'plan.md'), '# Plan\nnow with a xylophonic idea\n');
  writeFileSync(path.join(data, 'notes', 'new.txt'), 'a brand new xylophonic file\n');

  await until(async () => (await search(s.url, 'xylophonic')).total === 2, 'new content searchable', 20000);
  await until(() => {
    const paths = client.ofType('file_changed').map((e) => e.data.path);
    return paths.includes('notes/plan.md') && paths.includes('notes/new.txt');
  }, 'file_changed for both files', 20000);
  const kinds = Object.fromEntries(client.ofType('file_changed').map((e) => [e.data.path, e.data.kind]));
  assert.ok(['modified', 'created'].includes(kinds['notes/plan.md']), JSON.stringify(kinds));

  rmSync(path.join(data, 'notes', 'new.txt'));
  await until(async () => (await search(s.url, 'xylophonic')).total === 1, 'deleted file leaves the index', 20000);
  await until(() => client.ofType('file_changed').some((e) => e.data.path === 'notes/new.txt' && e.data.kind === 'deleted'),
    'file_changed deleted', 20000);
  // nothing from the server's own state folder is announced
  assert.ok(client.ofType('file_changed').every((e) => !e.data.path.startsWith('.collective-memory')));
});

test('searches, system status and cache clears reach Socket.IO and SSE clients', { timeout: 60000 }, async () => {
  const data = tempDir();
  for (let i = 0; i < 3; i++) writeFileSync(path.join(data, `n${i}.md`), `# Note ${i}\nmarimbatic entry\n`);
  const s = await startServer({ data });
  servers.push(s);
  await until(async () => (await (await fetch(`${s.url}/system/indexing`)).json()).data.finished_at, 'initial indexing');
  const types = ['search_started', 'search_completed', 'cache_cleared'];
  const sio = sioClient(s.url, { transports: ['websocket'], name: 'sio-memory' });
  await sio.connected();
  const sse = sseClient(s.url, { types, name: 'sse-memory' });
  await sse.opened();
  await until(() => sio.ofType('system_status').length >= 1 && sse.ofType('system_status').length >= 1, 'greetings');

  assert.equal((await search(s.url, 'marimbatic')).total, 3);
  const st = await fetch(`${s.url}/system/status`, { method: 'POST' });
  assert.equal(st.status, 200);
  const cc = await fetch(`${s.url}/system/cache/clear`, { method: 'POST' });
  assert.equal(cc.status, 200);

  for (const c of [sio, sse]) {
    await until(() => c.ofType('cache_cleared').length === 1, `${c.name} cache_cleared`);
    const done = c.ofType('search_completed');
    assert.equal(done.length, 1, c.name);
    assert.equal(done[0].data.query, 'marimbatic');
    assert.equal(done[0].data.results_count, 3);
    // the monitor's status goes to everyone, with the machine and index figures
    const status = c.ofType('system_status').find((e) => e.scope === 'global');
    assert.ok(status, `${c.name} got the published system_status`);
    assert.equal(status.data.index_docs, 3);
    for (const k of ['cpu_usage', 'memory_usage', 'disk_usage', 'uptime_s', 'index_bytes', 'connected_clients']) {
      assert.equal(typeof status.data[k], 'number', `${c.name} ${k}`);
    }
    // ids arrive in order on both transports
    const ids = c.events.map((e) => e.id);
    assert.deepEqual(ids, [...ids].sort((a, b) => a - b), c.name);
  }
  assert.ok(sio.ofType('system_status').find((e) => e.scope === 'global').data.connected_clients >= 2);
});
