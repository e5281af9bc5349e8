// The JavaScript client library in headless Chromium, imported straight from the server
// (`/client/index.js`, no build step): going offline and online, and a page reload that
// resumes from the cursor kept in localStorage.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, publishMany, until, TEST_EVENT } from './lib.mjs';
import { launchChromium } from './browser.mjs';

let s;
let browser;
before(async () => {
  s = await startServer();
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await s?.stop('SIGKILL');
});

/** Opens a page on the server's origin and connects the client there, recording into `window.rec`. */
async function open(page, options) {
  await page.goto(`${s.url}/health`);
  await page.evaluate(async ({ options, type }) => {
    const { connect } = await import('/client/index.js');
    const rec = { events: [], states: [], online: [] };
    window.rec = rec;
    window.addEventListener('online', () => rec.online.push(Date.now()));
    const c = connect(location.origin, options);
    window.client = c;
    c.on('event', (e) => { if (e.type === type) rec.events.push({ id: e.id, epoch: e.epoch, tag: e.data.tag }); });
    c.on('state', (st) => rec.states.push({ state: st.state, transport: st.transport, at: st.at, delay: st.delay_ms }));
    await c.whenConnected();
  }, { options, type: TEST_EVENT });
}

const recorded = (page) => page.evaluate(() => window.rec);

function exactlyOnce(events, ids, tag) {
  const got = events.filter((e) => e.tag === tag).map((e) => e.id);
  assert.deepEqual(got, ids);
  for (let i = 1; i < events.length; i++) assert.ok(events[i].id > events[i - 1].id, 'in order, no repeat');
}

test('offline pauses the client; online reconnects within a second and nothing is lost', { timeout: 60000 }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  // a backoff this long cannot explain a quick reconnection: only the `online` event can
  await open(page, { backoff: { initialMs: 600000, maxMs: 600000 } });
  const first = await publishMany(s.url, 20, 'off-1');
  await until(async () => (await recorded(page)).events.length >= 20, 'events before going offline');

  await context.setOffline(true);
  await until(async () => (await page.evaluate(() => window.client.state)) === 'offline', 'the client goes offline');
  const during = await publishMany(s.url, 30, 'off-2');
  await context.setOffline(false);
  await until(async () => (await page.evaluate(() => window.client.state)) === 'connected', 'connected again');
  await until(async () => (await recorded(page)).events.length >= 50, 'the events missed while offline');

  const rec = await recorded(page);
  const offAt = rec.states.findIndex((x) => x.state === 'offline');
  const back = rec.states.slice(offAt).find((x) => x.state === 'connected');
  assert.equal(rec.online.length, 1, 'the page saw `online`');
  assert.ok(back.at - rec.online[0] < 1000, `reconnected ${back.at - rec.online[0]} ms after online`);
  console.log(`reconnected ${back.at - rec.online[0]} ms after online, over ${back.transport}`);
  // nothing was attempted while offline
  const between = rec.states.slice(offAt + 1, rec.states.indexOf(back));
  assert.ok(between.every((x) => x.at >= rec.online[0]), `no attempt while offline: ${JSON.stringify(between)}`);
  exactlyOnce(rec.events, first, 'off-1');
  exactlyOnce(rec.events, during, 'off-2');
  await context.close();
});

test('a reload resumes from the cursor in localStorage: no gap, no repeat', { timeout: 60000 }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const options = { storage: 'cmem-test-cursor' };
  await open(page, options);
  const first = await publishMany(s.url, 25, 'reload-1');
  await until(async () => (await recorded(page)).events.length >= 25, 'events before the reload');
  const before = await recorded(page);
  exactlyOnce(before.events, first, 'reload-1');
  const stored = await page.evaluate(() => JSON.parse(localStorage.getItem('cmem-test-cursor')));
  const last = before.events.at(-1);
  assert.equal(stored.cursor, `${last.epoch}:${last.id}`, 'the cursor is stored as each event arrives');

  // the page is gone while these are published
  await page.goto('about:blank');
  const missed = await publishMany(s.url, 30, 'reload-2');
  await page.goto(`${s.url}/health`);
  await open(page, options);
  const more = await publishMany(s.url, 10, 'reload-3');
  await until(async () => (await recorded(page)).events.length >= 40, 'events after the reload');
  const after = await recorded(page);
  assert.ok(after.events.every((e) => e.tag !== 'reload-1'), 'nothing from before the reload again');
  exactlyOnce(after.events, missed, 'reload-2');
  exactlyOnce(after.events, more, 'reload-3');
  await context.close();
});
