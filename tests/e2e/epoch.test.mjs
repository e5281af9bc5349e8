// A cursor always names its journal: SSE `id:` lines and poll cursors are `<epoch>:<id>`, and
// clients that keep them (an EventSource keeps the last `id:` by itself) get a `resync` when
// they come back to a journal that was recreated or restored — never a silent replay of other
// events under ids they have already seen.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  CMEM_BIN, TEST_EVENT, startServer, closeAllClients, sioClient, sseClient, pollClient,
  publish, until, tempDir,
} from './lib.mjs';

const servers = [];
after(async () => {
  await closeAllClients();
  for (const s of servers) await s.stop('SIGKILL');
});

const events = (n, tag) => Array.from({ length: n }, (_, i) => ({ type: TEST_EVENT, data: { tag, i } }));

/** One client of each kind, reconnecting by themselves and keeping `<epoch>:<id>` cursors;
 * resolves once each has been greeted (so it sees everything published afterwards). */
async function clientsOf(url) {
  const clients = [
    sioClient(url, { transports: ['websocket'], reconnection: true, name: 'ws' }),
    sioClient(url, { transports: ['polling'], reconnection: true, name: 'polling' }),
    sseClient(url, { name: 'eventsource' }),
    pollClient(url, { clientId: 'epoch-poller', name: 'poll' }),
  ];
  for (const c of clients) await until(() => c.ofType('system_status').length >= 1, `${c.name}: greeted`);
  return clients;
}

async function resyncedAfter(clients, s2, tag) {
  for (const c of clients) {
    await until(() => c.ofType('resync').length >= 1, `${c.name}: a resync from the new journal`, 30000);
    const r = c.ofType('resync')[0];
    assert.equal(r.data.reason, 'epoch_mismatch', `${c.name}: ${JSON.stringify(r.data)}`);
  }
  // and they go on with the new journal's events
  await publish(s2.url, events(2, tag));
  for (const c of clients) await until(() => c.tests(tag).length === 2, `${c.name}: new events after the resync`, 30000);
}

test('clients that come back to a recreated journal get a resync on every transport, even once it has grown past their cursors', { timeout: 120000 }, async () => {
  const data = tempDir();
  const s1 = await startServer({ data });
  servers.push(s1);
  const clients = await clientsOf(s1.url);
  await publish(s1.url, events(3, 'before'));
  for (const c of clients) await until(() => c.tests('before').length === 3, `${c.name}: the first journal's events`);
  for (const c of clients) assert.match(String(c.cursor), /^[0-9a-f]+:\d+$/, `${c.name}: cursor ${c.cursor}`);
  await s1.stop();
  fs.rmSync(path.join(data, '.collective-memory'), { recursive: true, force: true });
  const s2 = await startServer({ data, port: s1.port });
  servers.push(s2);
  await publish(s2.url, events(15, 'grown'));
  await resyncedAfter(clients, s2, 'after');
  for (const c of clients) c.close();
});

test('clients that read past a backup get a resync after it is restored', { timeout: 120000 }, async () => {
  const data = tempDir();
  const s1 = await startServer({ data });
  servers.push(s1);
  await publish(s1.url, events(5, 'kept'));
  const backup = path.join(tempDir(), 'backup');
  const manifest = JSON.parse(execFileSync(CMEM_BIN, ['backup', backup, '--data', data, '--json']).toString());
  const clients = await clientsOf(s1.url);
  await publish(s1.url, events(5, 'lost'));
  for (const c of clients) await until(() => c.tests('lost').length === 5, `${c.name}: events past the backup`);
  await s1.stop();
  const restored = JSON.parse(execFileSync(CMEM_BIN, ['restore', backup, '--data', data, '--json']).toString());
  assert.notEqual(restored.epoch, manifest.epoch);
  const s2 = await startServer({ data, port: s1.port });
  servers.push(s2);
  await publish(s2.url, events(8, 'reused'));
  await resyncedAfter(clients, s2, 'after-restore');
  for (const c of clients) c.close();
});
