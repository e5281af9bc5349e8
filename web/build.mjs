// Bundles the shared-document editor (docs/editor.js: Yjs and CodeMirror from npm) into one
// ES module for the binary. Run by crates/cmem/build.rs (`node build.mjs <outfile>`), which
// embeds the result at /app/docs.js; by hand: `npm ci && node build.mjs /tmp/docs.js`.
import { build } from 'esbuild';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const outfile = process.argv[2];
if (!outfile) {
  console.error('usage: node build.mjs <outfile>');
  process.exit(2);
}
await build({
  entryPoints: [path.join(here, 'docs', 'editor.js')],
  bundle: true,
  format: 'esm',
  minify: true,
  target: 'es2020',
  outfile,
  legalComments: 'eof',
  logLevel: 'warning',
});
