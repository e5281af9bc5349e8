// Measures the web app as a person meets it (run by hand: `node bench-web.mjs`; BENCHMARKS.md
// has the figures): what the first page loads (bytes as sent and gzipped) and the time from
// navigation to the first search result on screen, in Debian's headless Chromium against a
// debug or release cmem (CMEM_BIN) on loopback, with a cold and a warm browser cache.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { startServer, tempDir } from './lib.mjs';
import { launchChromium } from './browser.mjs';

const RUNS = Number(process.env.RUNS || 7);
const data = tempDir();
mkdirSync(path.join(data, 'notes'));
for (let i = 0; i < 200; i++) writeFileSync(path.join(data, 'notes', `n${i}.md`), `# Note ${i}\nsome words about harbors and ${i % 7 === 0 ? 'quokkaphonic ' : ''}releases\n`);
const s = await startServer({ data });
const browser = await launchChromium();

const bytes = {};
for (const p of ['/', '/app/app.js', '/app/app.css', '/client/index.js']) {
  const body = Buffer.from(await (await fetch(s.url + p)).arrayBuffer());
  bytes[p] = { raw: body.length, gzip: zlib.gzipSync(body, { level: 9 }).length };
}
const total = Object.values(bytes).reduce((a, b) => ({ raw: a.raw + b.raw, gzip: a.gzip + b.gzip }), { raw: 0, gzip: 0 });

async function firstResult(page) {
  const t0 = Date.now();
  await page.goto(`${s.url}/#/search?q=quokkaphonic`);
  await page.locator('.result').first().waitFor();
  return Date.now() - t0;
}
const cold = [];
for (let i = 0; i < RUNS; i++) {
  const ctx = await browser.newContext();
  cold.push(await firstResult(await ctx.newPage()));
  await ctx.close();
}
const ctx = await browser.newContext();
const page = await ctx.newPage();
await firstResult(page);
const warm = [];
for (let i = 0; i < RUNS; i++) {
  await page.goto('about:blank');
  warm.push(await firstResult(page));
}
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
console.log(JSON.stringify({ bytes, total, first_result_ms: { cold_median: median(cold), cold, warm_median: median(warm), warm } }, null, 1));
await browser.close();
await s.stop();
