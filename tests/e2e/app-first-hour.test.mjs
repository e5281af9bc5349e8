// The web app as a new user meets it in the first hour (issue 25), in Debian's headless
// Chromium under the page's own Content-Security-Policy (never bypassed here): no page breaks
// the policy, the document editor draws whole, snippets read as written, a search that finds
// nothing says why and what to try, titles come from any heading, a new document shows up for
// the other members at once, the first user asks open tabs to sign in, and the header says
// who is signed in.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { CMEM_BIN, startServer, tempDir, until } from './lib.mjs';
import { launchChromium } from './browser.mjs';

let browser;
const servers = [];
before(async () => { browser = await launchChromium(); });
after(async () => {
  await browser?.close();
  for (const s of servers) await s.stop('SIGKILL');
});

function folder() {
  const data = tempDir();
  mkdirSync(path.join(data, 'notes'));
  writeFileSync(path.join(data, 'notes', 'harbor.md'), "# Harbor plan\nThe quokkaphonic release isn't ready yet.\n");
  writeFileSync(path.join(data, 'notes', 'deep.md'), 'Intro line.\n## Second level title\nzebrafish notes\n');
  writeFileSync(path.join(data, 'notes', 'account.md'), '# Account help\n\n## Changing your login secret\n\nOpen the profile page, choose Security, and type a new passphrase twice.\n');
  return data;
}

async function serve(opts = {}) {
  const s = await startServer({ data: opts.data ?? folder(), ...opts });
  servers.push(s);
  return s;
}

/** A page that records every policy violation, failed load and script error. */
async function strictPage(viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.problems = [];
  page.on('console', (m) => {
    if (/Content Security Policy|Failed to load resource/.test(m.text())) page.problems.push(m.text());
  });
  page.on('pageerror', (e) => page.problems.push(e.message));
  page.on('response', (r) => { if (r.status() === 401) page.problems.push(`401 ${r.url()}`); });
  return page;
}

test('every page keeps the strict policy; the editor draws whole; snippets, titles, empty searches and the header read right', { timeout: 120000 }, async () => {
  const s = await serve();
  const ws = await fetch(`${s.url}/api/admin/workspaces`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'eng' }) });
  assert.equal(ws.status, 201);
  const page = await strictPage();
  await page.goto(s.url);
  await page.getByRole('status', { name: 'Connection' }).getByText(/live/).waitFor();
  assert.match(await page.locator('#whoami').textContent(), /open server/);

  // before any search: nothing to export or page through
  assert.equal(await page.getByRole('button', { name: 'Export as Markdown' }).isVisible(), false);
  assert.equal(await page.getByRole('button', { name: '← Previous' }).isVisible(), false);
  const box = page.getByRole('searchbox', { name: 'Search' });
  await box.fill('quokkaphonic');
  const hit = page.locator('.result').filter({ hasText: 'notes/harbor.md' });
  await hit.waitFor();
  // tantivy escapes the apostrophe as &#x27;: shown as written
  assert.match(await hit.locator('.snippet').textContent(), /isn't ready/);
  assert.equal(await page.getByRole('button', { name: 'Export as Markdown' }).isVisible(), true);
  assert.equal(await page.getByRole('button', { name: '← Previous' }).isVisible(), false, 'one page: no paging');

  // a title from a second-level heading, not the file name
  await box.fill('zebrafish');
  const deep = page.locator('.result').filter({ hasText: 'notes/deep.md' });
  await deep.getByRole('link', { name: 'Second level title' }).waitFor();
  // the passage that answers: its heading and lines; the link opens the document there
  assert.match(await deep.locator('.passage').textContent(), /§ Second level title, lines 2–3/);
  await deep.getByRole('link', { name: 'Second level title' }).click();
  await page.locator('#L3 mark').first().waitFor();
  assert.ok(await page.locator('#L2').isVisible(), 'the passage is in view');
  assert.match(page.url(), /line=2/);
  await page.goBack();

  // while typing, the last word is the start of a word
  await box.fill('quokk');
  await page.locator('.result').filter({ hasText: 'notes/harbor.md' }).waitFor();
  // once it is whole (a space), nothing has it: why, and the words the index has that start
  // the same way
  await box.fill('quokk ');
  const empty = page.locator('.results .empty');
  await empty.getByText(/No indexed document contains “quokk”/).waitFor();
  await empty.getByRole('button', { name: 'quokkaphonic' }).click();
  await page.locator('.result').filter({ hasText: 'notes/harbor.md' }).waitFor();

  // a question that shares no word with its answer: found by meaning, and the page says so
  await until(async () => {
    const v = (await (await fetch(`${s.url}/system/indexing`)).json()).data.vectors;
    return v.documents_total >= 3 && v.documents === v.documents_total && !v.running;
  }, 'the vectors', 60000);
  await box.fill('how do I reset my password ');
  const meant = page.locator('.result').filter({ hasText: 'notes/account.md' });
  await meant.getByText('by meaning').waitFor();
  assert.match(await meant.locator('.passage').textContent(), /§ Account help › Changing your login secret/);
  assert.match(await page.locator('.meta').textContent(), /words and meaning/);

  // the document editor under the policy: its styles apply, the line numbers sit left of the text
  await page.goto(`${s.url}/#/documents?ws=eng&doc=plan`);
  const content = page.locator('.cm-content');
  await content.waitFor();
  await content.click();
  await page.keyboard.type('first line\nsecond line');
  await page.getByRole('status', { name: 'Saving' }).getByText('saved').waitFor();
  const gutter = await page.locator('.cm-gutters').boundingBox();
  const text = await content.boundingBox();
  assert.ok(gutter.x + gutter.width <= text.x + 1, `gutter ${JSON.stringify(gutter)} left of the text ${JSON.stringify(text)}`);
  assert.ok(Math.abs(gutter.y - text.y) < 5, 'gutter and text start on the same line');

  // the other pages, each under the same policy
  for (const [hash, ready] of [
    ['#/activity', () => page.getByRole('region', { name: 'Activity' }).waitFor()],
    ['#/team?ws=eng', () => page.getByRole('list', { name: 'Messages' }).waitFor()],
    ['#/system', () => page.getByRole('region', { name: 'CPU' }).waitFor()],
    ['#/connection', () => page.getByText('This tab’s connection').waitFor()],
    ['#/admin', () => page.getByRole('table', { name: 'Users' }).waitFor()],
  ]) {
    await page.goto(`${s.url}/${hash}`);
    await ready();
  }
  // the chat fills the height it has, not a strip
  await page.goto(`${s.url}/#/team?ws=eng`);
  const chat = await page.getByRole('list', { name: 'Messages' }).boundingBox();
  assert.ok(chat.height > 350, `chat is ${chat.height} px tall`);

  const icon = await fetch(`${s.url}/favicon.ico`);
  assert.equal(icon.status, 200);
  assert.match(icon.headers.get('content-type'), /image\/svg\+xml/);
  assert.deepEqual(page.problems, [], 'no policy violation, failed load or script error on any page');
  await page.context().close();
});

test('with users: a document one member makes shows in the other\'s list at once; the header names who is signed in; no 401 on a signed-in load', { timeout: 120000 }, async () => {
  const data = folder();
  const cmem = (...args) => execFileSync(CMEM_BIN, [...args, '--data', data], { env: { ...process.env, RUST_LOG: 'warn' } }).toString();
  cmem('workspace', 'create', 'eng');
  const tokens = {};
  for (const u of ['alice', 'bob']) {
    cmem('user', 'add', u, ...(u === 'alice' ? ['--admin'] : []));
    cmem('workspace', 'add-member', 'eng', u);
    tokens[u] = JSON.parse(cmem('token', 'create', u, '--json')).token;
  }
  const s = await serve({ data });
  const pages = {};
  for (const u of ['alice', 'bob']) {
    const page = await strictPage();
    await page.goto(s.url);
    await page.getByLabel('Token').fill(tokens[u]);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('status', { name: 'Connection' }).getByText(/live/).waitFor();
    assert.match(await page.locator('#whoami').textContent(), new RegExp(`signed in as ${u}`));
    // the sign-in page asked once without a token; a signed-in load never does
    page.problems = [];
    await page.reload();
    await page.getByRole('status', { name: 'Connection' }).getByText(/live/).waitFor();
    await page.goto(`${s.url}/#/documents?ws=eng`);
    await page.getByRole('list', { name: 'Documents' }).getByText('none yet').waitFor();
    pages[u] = page;
  }
  const { alice, bob } = pages;
  await alice.goto(`${s.url}/#/documents?ws=eng&doc=roadmap`);
  await alice.locator('.cm-content').click();
  await alice.keyboard.type('Q3: ship it');
  await alice.getByRole('status', { name: 'Saving' }).getByText('saved').waitFor();
  // bob did not reload: the new document arrives as an event
  await bob.getByRole('list', { name: 'Documents' }).getByRole('link', { name: 'roadmap' }).waitFor({ timeout: 15000 });
  for (const p of Object.values(pages)) {
    assert.deepEqual(p.problems, [], 'no policy violation, failed load, script error or 401');
    await p.context().close();
  }
});

test('the first user, made while a tab is open on the open server, brings that tab to the sign-in at once', { timeout: 90000 }, async () => {
  const s = await serve();
  const page = await strictPage();
  await page.goto(s.url);
  await page.getByRole('status', { name: 'Connection' }).getByText(/live/).waitFor();
  const r = await fetch(`${s.url}/api/admin/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'root', admin: true, create_token: true }) });
  assert.equal(r.status, 201);
  const { token } = (await r.json()).data.token;
  await page.getByLabel('Token').waitFor({ timeout: 15000 });
  await page.getByRole('alert').getByText(/now has users/).waitFor();
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('status', { name: 'Connection' }).getByText(/live/).waitFor();
  assert.match(await page.locator('#whoami').textContent(), /signed in as root \(admin\)/);
  await page.context().close();
});
