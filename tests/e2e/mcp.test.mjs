// The MCP server, driven by the official MCP TypeScript SDK client over streamable HTTP (`/mcp`
// on the server's port) and over stdio (`cmem mcp`): tools, resources and prompts are listed;
// search finds a planted document and the search is published to the journal; read_document
// returns lines and refuses `..`, absolute paths and a symbolic link out; a server with users
// wants a token (401) and a non-member's recent_activity holds nothing of another workspace;
// a subscribed document edited on disk brings `notifications/resources/updated`.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync, appendFileSync, symlinkSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import {
  ResourceUpdatedNotificationSchema,
  ResourceListChangedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';
import { CMEM_BIN, startServer, tempDir, until } from './lib.mjs';

const UNDER_WINE = /wine/.test(CMEM_BIN);
const servers = [];
const clients = [];
after(async () => {
  for (const c of clients) await c.close().catch(() => {});
  for (const s of servers) await s.stop('SIGKILL');
});

const TOOLS = ['list_documents', 'list_workspaces', 'notify', 'post_message', 'read_document',
  'recent_activity', 'related_documents', 'search_memory', 'similar_searches'];

/** A data folder with a planted document, and a secret outside it reachable by a link. */
function folder() {
  const data = tempDir();
  mkdirSync(path.join(data, 'notes'));
  writeFileSync(path.join(data, 'notes', 'harbor.md'),
    '# Harbor plan\nline two\nThe quokkaphonic release ships on Friday.\nline four\nline five\n');
  writeFileSync(path.join(data, 'readme.txt'), 'nothing to see here\n');
  writeFileSync(path.join(data, 'notes', 'ferry.md'), '# Ferry timetable\nThe harbor plan moves the ferry berths: line two, line four and line five stay.\n');
  const outside = tempDir();
  writeFileSync(path.join(outside, 'secret.txt'), 'the vault code is 4711 quokkaphonic\n');
  // Wine shows a Unix link to a Windows program as the file itself (no reparse point), so the
  // link case is tested on Linux only; Windows' links are the Rust suite's
  if (!UNDER_WINE) symlinkSync(path.join(outside, 'secret.txt'), path.join(data, 'notes', 'leak.md'));
  return data;
}

function cmem(data, ...args) {
  return execFileSync(CMEM_BIN, [...args, '--data', data], { env: { ...process.env, RUST_LOG: 'warn' } }).toString();
}

async function serve(opts) {
  const s = await startServer(opts);
  servers.push(s);
  // the start-up indexing run is over once the planted document can be found
  await until(async () => {
    const r = await fetch(`${s.url}/api/search?q=quokkaphonic`, { headers: opts?.token ? { authorization: `Bearer ${opts.token}` } : {} });
    return r.ok && (await r.json()).data.total >= 1;
  }, 'the start-up index');
  return s;
}

async function overHttp(url, token) {
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  const client = new Client({ name: 'cmem-e2e', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`), { requestInit: { headers } }));
  clients.push(client);
  return client;
}

async function overStdio(data, { url, token } = {}) {
  const env = { ...process.env, RUST_LOG: 'warn' };
  delete env.CM_TOKEN;
  if (token) env.CM_TOKEN = token;
  const args = ['mcp', '--data', data];
  if (url) args.push('--url', url);
  const transport = new StdioClientTransport({ command: CMEM_BIN, args, env, stderr: 'pipe' });
  const client = new Client({ name: 'cmem-e2e-stdio', version: '1.0.0' });
  await client.connect(transport);
  clients.push(client);
  return client;
}

const text = (r) => r.content.map((c) => c.text).join('\n');
async function tool(client, name, args = {}) {
  const r = await client.callTool({ name, arguments: args });
  return { error: r.isError === true, text: text(r) };
}

/** What every transport must show: the catalogue, search, reading, refusals, a prompt. */
async function catalogueAndTools(client) {
  const tools = (await client.listTools()).tools;
  assert.deepEqual(tools.map((t) => t.name).sort(), TOOLS);
  for (const t of tools) {
    assert.equal(t.inputSchema.type, 'object', t.name);
    assert.ok(t.description.length > 40, t.name);
  }
  const resources = (await client.listResources()).resources;
  assert.ok(resources.some((r) => r.uri === 'cmem://doc/notes/harbor.md' && r.mimeType === 'text/markdown'),
    JSON.stringify(resources));
  assert.ok(!resources.some((r) => r.uri.includes('leak')), 'a link is never indexed');
  const templates = (await client.listResourceTemplates()).resourceTemplates;
  assert.equal(templates[0].uriTemplate, 'cmem://doc/{path}');
  const prompts = (await client.listPrompts()).prompts.map((p) => p.name).sort();
  assert.deepEqual(prompts, ['what_changed', 'what_we_know']);

  const found = await tool(client, 'search_memory', { query: 'quokkaphonic' });
  assert.equal(found.error, false, found.text);
  assert.match(found.text, /notes\/harbor\.md/);
  assert.match(found.text, /\*\*quokkaphonic\*\*/);
  // the passage that answers, with its heading and the lines to read
  assert.match(found.text, /§ Harbor plan, lines 1-5 \(read_document with start_line 1, end_line 5\)/);
  assert.doesNotMatch(found.text, /leak|vault/);
  assert.match(found.text, /found by words/);
  // a question in other words: the meaning finds a passage once the vectors are made
  let boats;
  await until(async () => {
    boats = await tool(client, 'search_memory', { query: 'where do the boats tie up', mode: 'semantic' });
    return !boats.error && /1\. notes\//.test(boats.text);
  }, 'meaning search');
  assert.match(boats.text, /found by meaning/);
  assert.match(boats.text, /lines \d+-\d+ \(read_document with start_line/);
  const badMode = await tool(client, 'search_memory', { query: 'x', mode: 'fuzzy' });
  assert.equal(badMode.error, true);
  assert.match(badMode.text, /hybrid, keyword or semantic/);
  // the documents nearest to one, for context around a file; never the file itself
  const related = await tool(client, 'related_documents', { path: 'notes/harbor.md' });
  assert.equal(related.error, false, related.text);
  assert.match(related.text, /1\. notes\/ferry\.md — Ferry timetable/);
  assert.doesNotMatch(related.text, /\d\. notes\/harbor\.md/);
  const unknown = await tool(client, 'related_documents', { path: 'notes/nothing.md' });
  assert.equal(unknown.error, true);
  assert.match(unknown.text, /not an indexed document/);
  const none = await tool(client, 'search_memory', { query: 'zebracornflakes' });
  assert.match(none.text, /No document matches/);
  const bad = await tool(client, 'search_memory', { query: 'x', limt: 3 });
  assert.equal(bad.error, true);
  assert.match(bad.text, /unknown field `limt`/);
  const syntax = await tool(client, 'search_memory', { query: '(((' });
  assert.equal(syntax.error, true);

  const lines = await tool(client, 'read_document', { path: 'notes/harbor.md', start_line: 2, end_line: 3 });
  assert.equal(lines.error, false, lines.text);
  assert.match(lines.text, /lines 2-3 of 5/);
  assert.match(lines.text, /line two\nThe quokkaphonic release ships on Friday\.\n$/);
  const past = await tool(client, 'read_document', { path: 'notes/harbor.md', start_line: 9 });
  assert.equal(past.error, true);
  assert.match(past.text, /has 5 lines/);
  for (const [p, why] of [
    ['../secret.txt', /may not contain `\.\.`/],
    ['notes/../../x', /may not contain `\.\.`/],
    ['/etc/passwd', /relative to the data folder/],
    ['C:\\Windows\\win.ini', /relative to the data folder/],
    ['.collective-memory/journal.sqlite3', /hidden/],
    ['notes/nothere.md', /no file/],
  ]) {
    const r = await tool(client, 'read_document', { path: p });
    assert.equal(r.error, true, p);
    assert.match(r.text, why, p);
  }
  if (!UNDER_WINE) {
    const link = await tool(client, 'read_document', { path: 'notes/leak.md' });
    assert.equal(link.error, true);
    assert.match(link.text, /symbolic link/);
    assert.doesNotMatch(link.text, /4711/);
  }
  await assert.rejects(client.readResource({ uri: 'cmem://doc/../secret.txt' }), /\.\./);
  const res = await client.readResource({ uri: 'cmem://doc/notes/harbor.md' });
  assert.match(res.contents[0].text, /quokkaphonic/);

  const listed = await tool(client, 'list_documents', { path_prefix: 'notes/' });
  assert.match(listed.text, /notes\/harbor\.md/);
  assert.doesNotMatch(listed.text, /readme/);

  const prompt = await client.getPrompt({ name: 'what_we_know', arguments: { topic: 'quokkaphonic' } });
  assert.match(prompt.messages[0].content.text, /notes\/harbor\.md/);
  const changed = await client.getPrompt({ name: 'what_changed', arguments: { since: '1h' } });
  assert.match(changed.messages[0].content.text, /since/);
  await assert.rejects(client.getPrompt({ name: 'what_changed', arguments: { since: 'yesterday' } }), /neither a duration/);
}

/** Subscribes to a document, edits it on disk, waits for the update; a new file lists. */
async function subscriptions(client, data) {
  const updated = [];
  let listChanged = 0;
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => { updated.push(n.params.uri); });
  client.setNotificationHandler(ResourceListChangedNotificationSchema, () => { listChanged++; });
  await client.subscribeResource({ uri: 'cmem://doc/notes/harbor.md' });
  await assert.rejects(client.subscribeResource({ uri: 'cmem://doc/../x' }), /\.\./);
  appendFileSync(path.join(data, 'notes', 'harbor.md'), 'an added line about otters\n');
  await until(() => updated.includes('cmem://doc/notes/harbor.md'), 'resources/updated for the edited document', 20000);
  writeFileSync(path.join(data, 'notes', 'new.md'), 'a new note\n');
  await until(() => listChanged > 0, 'resources/list_changed for a new document', 20000);
  // an unrelated, unsubscribed document changing does not notify this one
  const before = updated.length;
  await client.unsubscribeResource({ uri: 'cmem://doc/notes/harbor.md' });
  appendFileSync(path.join(data, 'notes', 'harbor.md'), 'after unsubscribing\n');
  unlinkSync(path.join(data, 'notes', 'new.md'));
  const lists = listChanged;
  await until(() => listChanged > lists, 'resources/list_changed for the removed document', 20000);
  assert.equal(updated.length, before, 'no update after unsubscribing');
}

test('over streamable HTTP: catalogue, search, reading with refusals, prompts, and the search in the journal', { timeout: 90000 }, async () => {
  const data = folder();
  const s = await serve({ data });
  const client = await overHttp(s.url);
  await catalogueAndTools(client);
  // the search was published like any other, marked as coming from MCP
  const activity = await tool(client, 'recent_activity', { types: ['search_completed'] });
  assert.match(activity.text, /search_completed \[global\] .*"query":"quokkaphonic".*"via":"mcp"/);
  const similar = await tool(client, 'similar_searches', { query: 'quokkaphonic' });
  assert.match(similar.text, /`quokkaphonic` — 1 result/);
  await subscriptions(client, data);
  // a session ends with DELETE; the transport is then closed
  await client.transport.terminateSession();
});

test('with users: no token is a 401; members only see their workspaces; posting and notifying as oneself; search_publish_query is honoured', { timeout: 90000 }, async () => {
  const data = folder();
  cmem(data, 'user', 'add', 'alice', '--admin');
  cmem(data, 'workspace', 'create', 'eng');
  cmem(data, 'user', 'add', 'carol');
  cmem(data, 'workspace', 'add-member', 'eng', 'alice');
  const alice = JSON.parse(cmem(data, 'token', 'create', 'alice', '--json')).token;
  const carol = JSON.parse(cmem(data, 'token', 'create', 'carol', '--json')).token;
  const s = await serve({ data, token: alice, env: { CM_SEARCH_PUBLISH_QUERY: 'false' } });

  const init = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } };
  const raw = await fetch(`${s.url}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: JSON.stringify(init) });
  assert.equal(raw.status, 401);
  assert.equal(raw.headers.get('www-authenticate'), 'Bearer');
  await assert.rejects(overHttp(s.url, 'cm_0000_forged'));

  const a = await overHttp(s.url, alice);
  const posted = await tool(a, 'post_message', { workspace: 'eng', text: 'ship the quokkaphonic build' });
  assert.equal(posted.error, false, posted.text);
  assert.match(posted.text, /Posted to `eng` as `alice`/);
  const noted = await tool(a, 'notify', { workspace: 'eng', title: 'Build green', level: 'success' });
  assert.match(noted.text, /Notified `eng` \(success\): Build green/);
  const badLevel = await tool(a, 'notify', { workspace: 'eng', title: 'x', level: 'shouting' });
  assert.equal(badLevel.error, true);
  assert.match(badLevel.text, /level `shouting`/);
  const history = await (await fetch(`${s.url}/api/workspaces/eng/messages`, { headers: { authorization: `Bearer ${alice}` } })).json();
  assert.equal(history.data.messages[0].text, 'ship the quokkaphonic build');
  assert.equal(history.data.messages[0].user, 'alice');
  const mine = await tool(a, 'recent_activity', { workspace: 'eng' });
  assert.match(mine.text, /team_message \[workspace:eng\].*quokkaphonic build/);
  assert.match(mine.text, /team_notification \[workspace:eng\]/);
  assert.match((await tool(a, 'list_workspaces')).text, /eng {2}\(members: alice\)/);

  const c = await overHttp(s.url, carol);
  await tool(a, 'search_memory', { query: 'wombat' });
  await tool(c, 'search_memory', { query: 'quokkaphonic' });
  const theirs = await tool(c, 'recent_activity', { limit: 500 });
  assert.doesNotMatch(theirs.text, /workspace:eng|quokkaphonic build|Build green/);
  // a user's searches are in their own scope, without their text (search_publish_query =
  // false); alice's are not among carol's
  assert.match(theirs.text, /search_completed \[user:u[0-9a-f]+\] \{"query":null/);
  assert.equal(theirs.text.match(/search_completed/g).length, 1, theirs.text);
  // an admin sees everyone's: alice's own and carol's
  const all = await tool(a, 'recent_activity', { types: ['search_completed'] });
  const searchers = new Set([...all.text.matchAll(/search_completed \[user:(u[0-9a-f]+)\]/g)].map((m) => m[1]));
  assert.equal(searchers.size, 2, all.text);
  const refused = await tool(c, 'recent_activity', { workspace: 'eng' });
  assert.equal(refused.error, true);
  assert.match(refused.text, /`carol` is not a member of workspace `eng`/);
  const post = await tool(c, 'post_message', { workspace: 'eng', text: 'let me in' });
  assert.equal(post.error, true);
  assert.match(post.text, /not a member/);
  assert.match((await tool(c, 'list_workspaces')).text, /a member of no workspace/);

  // only a document that exists can be followed (names of nothing would pin memory)
  await assert.rejects(c.subscribeResource({ uri: 'cmem://doc/notes/nothing-here.md' }), /no document/);

  // a session of carol's with its GET stream open, as a client between requests holds it
  const carolHeaders = { authorization: `Bearer ${carol}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  const opened = await fetch(`${s.url}/mcp`, { method: 'POST', headers: carolHeaders, body: JSON.stringify(init) });
  assert.equal(opened.status, 200);
  const sid = opened.headers.get('mcp-session-id');
  await opened.body?.cancel();
  const session = { ...carolHeaders, 'mcp-session-id': sid, 'mcp-protocol-version': '2025-06-18' };
  await fetch(`${s.url}/mcp`, { method: 'POST', headers: session, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) });
  const stream = await fetch(`${s.url}/mcp`, { headers: { ...session, accept: 'text/event-stream' } });
  assert.equal(stream.status, 200);
  let streamEnded = false;
  (async () => {
    const reader = stream.body.getReader();
    try { while (!(await reader.read()).done); } catch { /* cut */ }
    streamEnded = true;
  })();

  // a revoked token stops working at its next request, and its open stream is closed
  const tokens = await (await fetch(`${s.url}/api/admin/tokens`, { headers: { authorization: `Bearer ${alice}` } })).json();
  const carolId = tokens.data.find((t) => t.user === 'carol').id;
  assert.equal((await fetch(`${s.url}/api/admin/tokens/${carolId}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${alice}` } })).status, 200);
  await assert.rejects(c.callTool({ name: 'list_workspaces', arguments: {} }), /401|revoked|not valid/i);
  await until(() => streamEnded, 'the revoked session\'s GET stream to close', 10000);
});

test('over stdio (cmem mcp): beside a running server, then without one', { timeout: 120000 }, async () => {
  const data = folder();
  cmem(data, 'user', 'add', 'alice');
  cmem(data, 'workspace', 'create', 'eng');
  cmem(data, 'workspace', 'add-member', 'eng', 'alice');
  const alice = JSON.parse(cmem(data, 'token', 'create', 'alice', '--json')).token;
  const s = await serve({ data, token: alice });

  // without a token the folder's users refuse it
  const refused = new StdioClientTransport({ command: CMEM_BIN, args: ['mcp', '--data', data], env: { ...process.env, CM_TOKEN: '' }, stderr: 'pipe' });
  let stderr = '';
  refused.stderr.on('data', (d) => { stderr += d; });
  await assert.rejects(new Client({ name: 'x', version: '1' }).connect(refused));
  await until(() => /needs one's token/.test(stderr), 'the refusal on stderr');

  const client = await overStdio(data, { url: s.url, token: alice });
  await catalogueAndTools(client);
  // through the running server: the search is in its journal, the message in its team room
  const posted = await tool(client, 'post_message', { workspace: 'eng', text: 'from the stdio assistant' });
  assert.match(posted.text, /Posted to `eng` as `alice`/);
  const activity = await tool(client, 'recent_activity', {});
  assert.match(activity.text, /search_completed \[user:u[0-9a-f]+\] .*"query":"quokkaphonic".*"via":"mcp"/);
  assert.match(activity.text, /team_message \[workspace:eng\].*from the stdio assistant/);
  await subscriptions(client, data);

  // the server stops: reads still answer from the folder, writes say what to do
  await s.stop();
  const found = await tool(client, 'search_memory', { query: 'quokkaphonic' });
  assert.match(found.text, /notes\/harbor\.md/);
  const offline = await tool(client, 'post_message', { workspace: 'eng', text: 'anyone?' });
  assert.equal(offline.error, true);
  assert.match(offline.text, /no cmem server is running/);
  // a revoked token stops cmem mcp too, at its next request
  const id = JSON.parse(cmem(data, 'token', 'list', '--json')).find((t) => t.user === 'alice').id;
  cmem(data, 'token', 'revoke', id);
  await assert.rejects(client.callTool({ name: 'list_workspaces', arguments: {} }), /revoked/);
});

test('over stdio on a folder no server ever ran on: cmem mcp indexes it and keeps it current, and gives the index up to a server started later', { timeout: 120000 }, async () => {
  const data = folder();
  const client = await overStdio(data, { url: 'http://127.0.0.1:9' });
  await until(async () => /notes\/harbor\.md/.test((await tool(client, 'search_memory', { query: 'quokkaphonic' })).text),
    'the catch-up run finds the planted document', 30000);
  writeFileSync(path.join(data, 'notes', 'later.md'), 'a zanzibarite note written while the assistant runs\n');
  await until(async () => /notes\/later\.md/.test((await tool(client, 'search_memory', { query: 'zanzibarite' })).text),
    'the watcher indexes a new file', 30000);
  // a server starting now takes the index over, and finds what cmem mcp indexed
  const s = await serve({ data });
  const r = await (await fetch(`${s.url}/api/search?q=zanzibarite`)).json();
  assert.equal(r.data.results[0].path, 'notes/later.md');
  const through = await overStdio(data, { url: s.url });
  assert.match((await tool(through, 'search_memory', { query: 'zanzibarite' })).text, /notes\/later\.md/);
});

test('hostile requests to /mcp get a 4xx that says why, sessions are bounded, and the server keeps serving', { timeout: 90000 }, async () => {
  const data = folder();
  const s = await serve({ data, env: { CM_MCP_MAX_SESSIONS: '2', CM_MAX_PAYLOAD_BYTES: '65536' } });
  const post = (body, headers = {}) => fetch(`${s.url}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body,
  });
  const init = (id = 1) => JSON.stringify({ jsonrpc: '2.0', id, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } });

  let r = await post('{"jsonrpc":"2.0","id":1,"method":');
  assert.ok(r.status >= 400 && r.status < 500, `truncated JSON: ${r.status}`);
  r = await post('['.repeat(30000) + ']'.repeat(30000));
  assert.ok(r.status >= 400 && r.status < 500, `deep nesting: ${r.status}`);
  // refused from its Content-Length, before it is read; the connection is then closed with the
  // body unread, and under Wine the reset can reach the client before the answer does
  r = await post(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', pad: 'x'.repeat(200000) }))
    .catch((e) => { if (UNDER_WINE) return { status: 413 }; throw e; });
  assert.equal(r.status, 413, 'a body above max_payload_bytes');
  r = await post(JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }), { 'mcp-session-id': 'no-such-session' });
  assert.ok(r.status === 404 || r.status === 400, `unknown session: ${r.status}`);
  r = await post(init(), { origin: 'http://evil.example' });
  assert.equal(r.status, 403, 'a foreign Origin');

  // two sessions fill the bound; a third is refused with the reason; ending one frees a place
  const a = await overHttp(s.url);
  const b = await overHttp(s.url);
  r = await post(init());
  assert.equal(r.status, 503);
  assert.match((await r.json()).error, /too many MCP sessions .*mcp_max_sessions = 2/);
  await a.transport.terminateSession();
  await a.close();
  const c = await overHttp(s.url);
  assert.match((await tool(c, 'search_memory', { query: 'quokkaphonic' })).text, /notes\/harbor\.md/);
  // hostile tool arguments are tool errors, not crashes
  for (const [name, args, why] of [
    ['search_memory', { query: '('.repeat(5000) }, /query/],
    ['search_memory', { query: 'x', limit: 100000 }, /limit must be from 1 to 200/],
    ['search_memory', { query: 'x', extensions: Array(60).fill('md') }, /at most 50/],
    ['read_document', { path: 'x'.repeat(10000) }, /not a usable path/],
    ['read_document', { path: 'notes/harbor.md', start_line: 0 }, /counts from 1/],
    ['read_document', { path: 'notes/harbor.md', start_line: 3, end_line: 2 }, /before start_line/],
    ['recent_activity', { types: ['a b'] }, /not an event type/],
    ['recent_activity', { limit: 0 }, /limit must be from 1 to 500/],
    ['list_documents', { path_prefix: '../' }, /may not contain `\.\.`/],
    ['post_message', { workspace: 'no such!', text: 'x' }, /workspace/],
    ['post_message', { workspace: 'eng' }, /missing field `text`/],
    ['similar_searches', { query: '' }, /query is required/],
  ]) {
    const out = await tool(c, name, args);
    assert.equal(out.error, true, `${name} ${JSON.stringify(args).slice(0, 80)}`);
    assert.match(out.text, why, name);
  }
  await assert.rejects(c.callTool({ name: 'drop_tables', arguments: {} }), /no tool `drop_tables`/);
  await b.close();
  const health = await (await fetch(`${s.url}/health`)).json();
  assert.equal(health.data.status, 'ok');
});
