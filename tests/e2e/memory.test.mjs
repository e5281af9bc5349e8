// The memory end to end: a file edited while the server runs is announced to a Socket.IO
// client as `file_changed` and found by its new content.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { startServer, closeAllClients, sioClient, until, tempDir } from './lib.mjs';

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
