// The web app served by cmem at `/`, driven in Debian's headless Chromium: search finds a
// planted document, a file edited on disk shows up in Activity and in a fresh search, the
// Connection indicator names the transport (polling behind nginx without Upgrade), a server
// with users asks for a token and signs a revoked one out, and axe finds no serious or
// critical violation. Screenshots of every page at laptop and phone sizes go to
// target/screenshots/ (not committed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { CMEM_BIN, startServer, tempDir } from './lib.mjs';
import { launchChromium } from './browser.mjs';
import { nginx, stopProxies } from './proxies.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const SHOTS = path.resolve(here, '../../target/screenshots');
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const SIZES = { laptop: { width: 1280, height: 800 }, phone: { width: 390, height: 844 } };

let browser;
const servers = [];
before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await stopProxies();
  for (const s of servers) await s.stop('SIGKILL');
});

/** A data folder with a planted document. */
function folder() {
  const data = tempDir();
  mkdirSync(path.join(data, 'notes'));
  writeFileSync(path.join(data, 'notes', 'harbor.md'), '# Harbor plan\nThe quokkaphonic release ships on Friday.\n');
  writeFileSync(path.join(data, 'notes', 'other.txt'), 'nothing to see here\n');
  return data;
}

async function serve(opts = {}) {
  const s = await startServer({ data: opts.data ?? folder(), ...opts });
  servers.push(s);
  return s;
}

async function axeCheck(page, where) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`), [], `axe on ${where}`);
}

async function shoot(page, name) {
  for (const [size, viewport] of Object.entries(SIZES)) {
    await page.setViewportSize(viewport);
    await page.screenshot({ path: path.join(SHOTS, `${name}-${size}.png`) });
  }
  await page.setViewportSize(SIZES.laptop);
}

test('search finds the planted document; an edit on disk shows in Activity and a fresh search; every page passes axe', { timeout: 90000 }, async () => {
  const s = await serve();
  // bypassCSP only lets the test inject axe; the app itself runs under its policy
  const context = await browser.newContext({ viewport: SIZES.laptop, bypassCSP: true });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(s.url);

  // no sign-in on an open loopback server
  const conn = page.getByRole('status', { name: 'Connection' });
  await conn.getByText(/live · websocket/).waitFor();
  const box = page.getByRole('searchbox', { name: 'Search' });
  await box.fill('quokkaphonic');
  const result = page.locator('.result').filter({ hasText: 'notes/harbor.md' });
  await result.waitFor();
  assert.equal(await result.locator('mark').first().textContent(), 'quokkaphonic');
  await axeCheck(page, 'search');
  await shoot(page, 'search');

  // open the result: the document, with the searched word marked
  await result.getByRole('link', { name: 'Harbor plan' }).click();
  await page.getByRole('heading', { name: 'notes/harbor.md' }).waitFor();
  await page.locator('pre.doc mark').first().waitFor();
  assert.equal(await page.locator('pre.doc mark').first().textContent(), 'quokkaphonic');
  await axeCheck(page, 'document');
  await shoot(page, 'document');
  await page.getByRole('link', { name: '← Back to results' }).click();
  await page.locator('.result').filter({ hasText: 'notes/harbor.md' }).waitFor();

  // an edit on disk: Activity shows file_changed, a fresh search finds the new words
  await page.getByRole('link', { name: 'Activity' }).click();
  const feed = page.getByRole('region', { name: 'Activity' });
  await feed.waitFor();
  writeFileSync(path.join(s.data, 'notes', 'harbor.md'), '# Harbor plan\nMoved: the zeppelinous release ships on Monday.\n');
  await feed.getByText(/modified: notes\/harbor\.md/).first().waitFor({ timeout: 15000 });
  await axeCheck(page, 'activity');
  await shoot(page, 'activity');
  await page.getByRole('link', { name: 'Search' }).click();
  await page.getByRole('searchbox', { name: 'Search' }).fill('zeppelinous');
  await page.locator('.result').filter({ hasText: 'notes/harbor.md' }).waitFor();

  // System: live tiles from /system/status, the journal and the index
  await page.getByRole('link', { name: 'System' }).click();
  await page.getByRole('region', { name: 'CPU' }).waitFor();
  await page.getByRole('region', { name: 'Connections' }).getByText(/websocket 1/).waitFor();
  await page.getByRole('region', { name: 'Search latency' }).getByText(/ms/).waitFor();
  await page.getByRole('region', { name: 'State' }).getByText(/head \d+/).waitFor();
  // how to connect an assistant: this server's /mcp, no token on an open server
  const mcp = await page.getByLabel('mcp.json entry').textContent();
  assert.equal(JSON.parse(mcp).mcpServers['team-memory'].url, `${s.url}/mcp`);
  assert.equal(JSON.parse(mcp).mcpServers['team-memory'].headers, undefined);
  await axeCheck(page, 'system');
  await shoot(page, 'system');

  await page.getByRole('link', { name: 'Connection' }).click();
  await page.getByText('This tab’s connection').waitFor();
  // the open server's local user is an admin: the server's side shows too
  await page.getByRole('table', { name: /Server connections/ }).getByRole('cell', { name: 'websocket' }).first().waitFor();
  await page.getByRole('table', { name: /Transport errors/ }).waitFor();
  await axeCheck(page, 'connection');
  await shoot(page, 'connection');
  assert.deepEqual(errors, [], 'no script errors');

  // the page's own policy: only the server's scripts
  const res = await fetch(s.url);
  assert.match(res.headers.get('content-security-policy'), /script-src 'self'/);
  await context.close();
});

test('the Activity feed keeps up with 200 events/s and holds 10,000 entries with few rows in the DOM', { timeout: 90000 }, async () => {
  const s = await serve();
  const context = await browser.newContext({ viewport: SIZES.laptop });
  const page = await context.newPage();
  await page.goto(`${s.url}/#/activity`);
  await page.getByRole('status', { name: 'Connection' }).getByText(/live/).waitFor();
  // 10,200 events: 51 batches of 200, one batch every second (200 events/s)
  for (let b = 0; b < 51; b++) {
    const events = Array.from({ length: 200 }, (_, i) => ({ type: 'load_test', data: { n: b * 200 + i } }));
    const r = await fetch(`${s.url}/api/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ events }) });
    assert.equal(r.status, 200);
    await new Promise((r2) => setTimeout(r2, 1000 / 5));
  }
  const feed = page.getByRole('region', { name: 'Activity' });
  await feed.getByText(/^10000 of 10000 events/).waitFor({ timeout: 30000 });
  const rows = await feed.locator('.row').count();
  assert.ok(rows > 5 && rows < 100, `${rows} rows in the DOM for 10,000 entries`);
  // the newest is on top
  assert.match(await feed.locator('.row').first().textContent(), /"n":10199/);
  await context.close();
});

test('behind nginx that drops Upgrade the app still updates live and Connection says polling', { timeout: 90000 }, async () => {
  const s = await serve();
  // the Host the browser used goes through, as a reverse proxy for a web app is set up (the
  // server checks a page's Origin against it)
  const via = await nginx(s.port, { forwardUpgrade: false, buffering: false, keepHost: true });
  const context = await browser.newContext({ viewport: SIZES.laptop });
  const page = await context.newPage();
  await page.goto(`${via}/#/activity`);
  await page.getByRole('status', { name: 'Connection' }).getByText(/live · polling/).waitFor({ timeout: 30000 });
  await fetch(`${s.url}/api/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ type: 'through_nginx', data: { hello: 'proxy' } }) });
  await page.getByRole('region', { name: 'Activity' }).getByText(/"hello":"proxy"/).waitFor();
  await context.close();
});

test('with users: sign in with a token; a wrong one is refused; a revoked one signs the tab out', { timeout: 90000 }, async () => {
  const data = folder();
  const cmem = (...args) => execFileSync(CMEM_BIN, [...args, '--data', data], { env: { ...process.env, RUST_LOG: 'warn' } }).toString();
  cmem('user', 'add', 'alice', '--admin');
  const admin = JSON.parse(cmem('token', 'create', 'alice', '--json')).token;
  cmem('user', 'add', 'bob');
  const bob = JSON.parse(cmem('token', 'create', 'bob', '--json'));
  const s = await serve({ data });
  const context = await browser.newContext({ viewport: SIZES.laptop, bypassCSP: true });
  const page = await context.newPage();
  await page.goto(s.url);
  const token = page.getByLabel('Token');
  await token.fill('cm_wrong_token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').getByText(/not accepted/).waitFor();
  await axeCheck(page, 'sign in');
  await shoot(page, 'signin');
  await token.fill(bob.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('status', { name: 'Connection' }).getByText(/live · websocket/).waitFor();
  // remembered per browser: a reload goes straight in
  await page.reload();
  await page.getByRole('status', { name: 'Connection' }).getByText(/live/).waitFor();
  assert.equal(await page.getByLabel('Token').count(), 0);

  const r = await fetch(`${s.url}/api/admin/tokens/${bob.id}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${admin}` } });
  assert.equal(r.status, 200);
  await page.getByRole('alert').getByText(/signed out/i).waitFor({ timeout: 15000 });
  await page.getByLabel('Token').waitFor();
  await context.close();
});

test('two people chat in a workspace and see each other online; a notification shows as a toast', { timeout: 90000 }, async () => {
  const data = folder();
  const cmem = (...args) => execFileSync(CMEM_BIN, [...args, '--data', data], { env: { ...process.env, RUST_LOG: 'warn' } }).toString();
  cmem('workspace', 'create', 'eng');
  const tokens = {};
  for (const u of ['alice', 'bob']) {
    cmem('user', 'add', u);
    cmem('workspace', 'add-member', 'eng', u);
    tokens[u] = JSON.parse(cmem('token', 'create', u, '--json')).token;
  }
  const s = await serve({ data });
  const pages = {};
  for (const u of ['alice', 'bob']) {
    const context = await browser.newContext({ viewport: SIZES.laptop, bypassCSP: true });
    const page = await context.newPage();
    await page.goto(s.url);
    await page.getByLabel('Token').fill(tokens[u]);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('status', { name: 'Connection' }).getByText(/live/).waitFor();
    await page.getByRole('link', { name: 'Team' }).click();
    pages[u] = page;
  }
  const { alice, bob } = pages;
  // presence: each sees the other
  await alice.getByRole('list', { name: 'Online' }).getByText('bob').waitFor();
  await bob.getByRole('list', { name: 'Online' }).getByText('alice').waitFor();
  await alice.getByRole('textbox', { name: 'Message' }).fill('hello bob, the harbor plan moved');
  await alice.getByRole('textbox', { name: 'Message' }).press('Enter');
  await bob.getByRole('list', { name: 'Messages' }).getByText('hello bob, the harbor plan moved').waitFor();
  const mine = alice.locator('.msg.mine').filter({ hasText: 'hello bob' });
  await mine.locator('.status[data-status="sent"]').waitFor();
  assert.equal(await alice.locator('.msg').filter({ hasText: 'hello bob' }).count(), 1, 'shown once to its sender');
  await bob.getByRole('textbox', { name: 'Message' }).fill('thanks alice');
  await bob.getByRole('button', { name: 'Send' }).click();
  await alice.getByRole('list', { name: 'Messages' }).getByText('thanks alice').waitFor();
  // a notification: a toast for the others, and the list
  await bob.getByLabel('Notify the workspace').fill('Deploy at 5');
  await bob.getByRole('button', { name: 'Notify' }).click();
  await alice.getByRole('status', { name: 'Notifications' }).getByText('Deploy at 5').waitFor();
  await alice.getByRole('list', { name: 'Notifications' }).getByText('Deploy at 5').waitFor();
  await axeCheck(alice, 'team');
  await shoot(alice, 'team');
  // history survives a reload
  await bob.reload();
  await bob.getByRole('list', { name: 'Messages' }).getByText('hello bob, the harbor plan moved').waitFor();
  for (const p of Object.values(pages)) await p.context().close();
});

test('an admin creates a user, a workspace membership and a token; the new user signs in with it', { timeout: 90000 }, async () => {
  const data = folder();
  const cmem = (...args) => execFileSync(CMEM_BIN, [...args, '--data', data], { env: { ...process.env, RUST_LOG: 'warn' } }).toString();
  cmem('user', 'add', 'root', '--admin');
  cmem('workspace', 'create', 'ops');
  const admin = JSON.parse(cmem('token', 'create', 'root', '--json')).token;
  const s = await serve({ data });
  const context = await browser.newContext({ viewport: SIZES.laptop, bypassCSP: true });
  const page = await context.newPage();
  await page.goto(s.url);
  await page.getByLabel('Token').fill(admin);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('link', { name: 'Admin' }).click();
  await page.getByLabel('New user').fill('carol');
  await page.getByRole('button', { name: 'Add user and token' }).click();
  const secret = await page.getByLabel('New token for carol').inputValue();
  assert.match(secret, /^cm_/);
  await page.getByRole('table', { name: 'Users' }).getByRole('cell', { name: 'carol', exact: true }).waitFor();
  await page.getByLabel('User to add to ops').selectOption('carol');
  await page.getByRole('table', { name: 'Workspaces' }).getByRole('button', { name: 'Add' }).click();
  await page.getByRole('button', { name: 'Remove carol from ops' }).waitFor();
  await page.getByRole('table', { name: /Configuration/ }).getByRole('cell', { name: 'ping_interval_ms' }).waitFor();
  await axeCheck(page, 'admin');
  await shoot(page, 'admin');

  // carol, in a browser of her own
  const other = await browser.newContext({ viewport: SIZES.laptop });
  const carol = await other.newPage();
  await carol.goto(s.url);
  await carol.getByLabel('Token').fill(secret);
  await carol.getByRole('button', { name: 'Sign in' }).click();
  await carol.getByRole('status', { name: 'Connection' }).getByText(/live/).waitFor();
  assert.equal(await carol.getByRole('link', { name: 'Admin' }).isVisible(), false, 'no Admin link for a member');
  await carol.getByRole('link', { name: 'Team' }).click();
  await carol.getByLabel('Workspace').getByRole('option', { name: 'ops' }).waitFor({ state: 'attached' });
  await other.close();
  await context.close();
});

test('two people edit one document together and converge; it survives a reload and a restart', { timeout: 120000 }, async () => {
  const s = await serve();
  const url = `${s.url}/#/documents?ws=eng&doc=plan`;
  // no bypassCSP here: the editor must work under the page's own policy
  const [a, b] = await Promise.all([0, 1].map(async () => (await browser.newContext({ viewport: SIZES.laptop })).newPage()));
  const errors = [];
  for (const p of [a, b]) { p.on('pageerror', (e) => errors.push(e.message)); await p.goto(url); }
  const editor = (p) => p.getByRole('textbox', { name: 'Document', exact: true });
  const text = (p) => editor(p).textContent();
  await editor(a).click();
  await a.keyboard.type('Harbor plan: ship on Friday.');
  await editor(b).getByText('Harbor plan: ship on Friday.').waitFor();
  await editor(b).click();
  await b.keyboard.press('Control+End');
  await b.keyboard.type(' Bob agrees.');
  await a.keyboard.press('Control+Home');
  await a.keyboard.type('[draft] ');
  const both = async () => {
    const [ta, tb] = await Promise.all([text(a), text(b)]);
    return ta === tb && ta.includes('[draft]') && ta.includes('Bob agrees.') ? ta : null;
  };
  let converged = null;
  for (let i = 0; i < 200 && !converged; i++) { converged = await both(); if (!converged) await a.waitForTimeout(50); }
  assert.ok(converged, `converged: "${await text(a)}" vs "${await text(b)}"`);
  await a.getByRole('status', { name: 'Saving' }).getByText('saved').waitFor();
  await b.getByRole('list', { name: 'Documents' }).getByRole('link', { name: 'plan' }).waitFor();

  // a reload keeps it
  await b.reload();
  await editor(b).getByText('Bob agrees.').waitFor();
  assert.equal(await text(b), converged);
  // so does a restart of the server
  await s.stop();
  const s2 = await serve({ data: s.data, port: s.port });
  await a.goto('about:blank');
  await a.goto(url);
  await editor(a).getByText('Bob agrees.').waitFor({ timeout: 20000 });
  assert.equal(await text(a), converged);
  assert.deepEqual(errors, []);
  const shotPage = await (await browser.newContext({ viewport: SIZES.laptop, bypassCSP: true })).newPage();
  await shotPage.goto(url.replace(s.url, s2.url));
  await editor(shotPage).getByText('Bob agrees.').waitFor();
  await axeCheck(shotPage, 'documents');
  await shoot(shotPage, 'documents');
  for (const p of [a, b, shotPage]) await p.context().close();
});
