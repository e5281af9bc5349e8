// Measures search through the MCP server next to the HTTP API (run by hand: `node
// bench-mcp.mjs` with CMEM_BIN pointing at a release build; BENCHMARKS.md has the figures).
// One corpus, one server, one run: the same query sequence over
//   - `GET /api/search` (fetch, keep-alive),
//   - `search_memory` over streamable HTTP (`/mcp`, the official TypeScript SDK client),
//   - `search_memory` over stdio (`cmem mcp` beside the server: it searches through the server),
//   - `search_memory` over stdio with no server running (the index on disk).
// Each figure is the time from the call to the parsed answer, on loopback.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { CMEM_BIN, startServer, tempDir, until } from './lib.mjs';

const N = Number(process.env.N || 300);
const FILES = Number(process.env.FILES || 2000);
const WORDS = ['harbor', 'release', 'quokka', 'budget', 'roadmap', 'incident', 'design', 'review'];
const data = tempDir();
mkdirSync(path.join(data, 'notes'));
for (let i = 0; i < FILES; i++) {
  const words = Array.from({ length: 200 }, (_, j) => WORDS[(i * 7 + j * 3) % WORDS.length] + (j % 13)).join(' ');
  writeFileSync(path.join(data, 'notes', `n${i}.md`), `# Note ${i}\n${words}\n`);
}
const queries = Array.from({ length: N }, (_, i) => `${WORDS[i % WORDS.length]}${i % 13}`);

const s = await startServer({ data, env: { RUST_LOG: 'warn' } });
await until(async () => { const st = (await (await fetch(`${s.url}/system/indexing`)).json()).data; return !st.running && st.index_docs >= FILES; }, 'indexing', 120000);

function stats(ms) {
  const v = [...ms].sort((a, b) => a - b);
  const q = (p) => v[Math.min(v.length - 1, Math.floor(p * v.length))];
  return { p50: q(0.5), p90: q(0.9), p99: q(0.99), mean: v.reduce((a, b) => a + b, 0) / v.length };
}

async function timed(fn) {
  for (let i = 0; i < 20; i++) await fn(queries[i]); // warm-up
  const out = [];
  for (const q of queries) {
    const t0 = performance.now();
    await fn(q);
    out.push(performance.now() - t0);
  }
  return stats(out);
}

async function mcpSearch(client, q) {
  const r = await client.callTool({ name: 'search_memory', arguments: { query: q, limit: 10 } });
  if (r.isError) throw new Error(r.content[0].text);
  return r;
}

const results = {};
results['GET /api/search'] = await timed(async (q) => {
  const r = await fetch(`${s.url}/api/search?q=${encodeURIComponent(q)}&limit=10`);
  if (!r.ok) throw new Error(String(r.status));
  return r.json();
});

const http = new Client({ name: 'bench', version: '1' });
await http.connect(new StreamableHTTPClientTransport(new URL(`${s.url}/mcp`)));
results['MCP streamable HTTP'] = await timed((q) => mcpSearch(http, q));
await http.close();

async function stdio(url) {
  const args = ['mcp', '--data', data];
  if (url) args.push('--url', url);
  const c = new Client({ name: 'bench', version: '1' });
  await c.connect(new StdioClientTransport({ command: CMEM_BIN, args, env: { ...process.env, RUST_LOG: 'warn' } }));
  return c;
}
const beside = await stdio(s.url);
results['MCP stdio, beside the server'] = await timed((q) => mcpSearch(beside, q));
await beside.close();

await s.stop();
const alone = await stdio('http://127.0.0.1:9');
results['MCP stdio, no server'] = await timed((q) => mcpSearch(alone, q));
await alone.close();

const f = (x) => x.toFixed(2);
console.log(`${FILES} files, ${N} searches each (limit 10), ${path.basename(CMEM_BIN)}`);
console.log('| path | p50 ms | p90 ms | p99 ms | mean ms |');
console.log('|---|---|---|---|---|');
for (const [k, v] of Object.entries(results)) console.log(`| ${k} | ${f(v.p50)} | ${f(v.p90)} | ${f(v.p99)} | ${f(v.mean)} |`);
