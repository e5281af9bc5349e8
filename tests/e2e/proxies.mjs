// Proxies for the hostile-network suites, all on loopback: Debian's nginx (dropping `Upgrade`,
// or buffering and compressing), a TCP proxy that cuts every connection on demand, and an HTTP
// proxy whose rules change mid-test (403 for Socket.IO, SSE held without flushing) — the
// corporate proxies clients meet.
import { spawn } from 'node:child_process';
import { writeFileSync, mkdirSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { tempDir, until } from './lib.mjs';

const stoppers = [];
/** Stops every proxy started here. */
export async function stopProxies() {
  for (const stop of stoppers.splice(0)) await stop();
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export async function accepts(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

/** Starts nginx (its own config, not the system's) proxying to `upstream`. */
export async function nginx(upstream, { forwardUpgrade, buffering, keepHost = false }) {
  return startNginx((port) => `
  ${buffering ? 'gzip on; gzip_types text/event-stream; gzip_min_length 1; gzip_proxied any;' : ''}
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://127.0.0.1:${upstream};
      proxy_http_version 1.1;
      ${keepHost ? 'proxy_set_header Host $http_host;  # as a reverse proxy in front of a web app does' : ''}
      ${forwardUpgrade ? 'proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade";' : '# the Upgrade header is deliberately not forwarded'}
      proxy_buffering ${buffering ? 'on' : 'off'};
      proxy_read_timeout 300s;
    }
  }`);
}

/**
 * Debian's nginx on a free loopback port, with `http(port)` as its http {} context (besides
 * the temporary paths); resolves with its URL. Stopped by `stopProxies`.
 */
export async function startNginx(http) {
  const dir = tempDir();
  for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(path.join(dir, d));
  const port = await freePort();
  const conf = path.join(dir, 'nginx.conf');
  writeFileSync(conf, `
daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${http(port)}
}
`);
  const child = spawn('nginx', ['-c', conf, '-p', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const spawned = new Promise((resolve, reject) => {
    child.on('error', (e) => reject(new Error(`nginx could not be started (${e.message}); install it: apt-get install nginx`)));
    child.on('spawn', resolve);
  });
  await spawned;
  await until(() => accepts(port), `nginx listening (${stderr})`);
  const exited = new Promise((r) => child.on('exit', r));
  stoppers.push(async () => { child.kill('SIGKILL'); await exited; });
  return `http://127.0.0.1:${port}`;
}

/** A TCP proxy that can cut every connection through it at once. */
export async function cuttingProxy(upstream) {
  const sockets = new Set();
  const pairs = new Set();
  const frozen = new Set();
  const srv = net.createServer((client) => {
    const up = net.connect(upstream, '127.0.0.1');
    sockets.add(client); sockets.add(up);
    const pair = { client, up };
    pairs.add(pair);
    client.pipe(up); up.pipe(client);
    const done = () => { client.destroy(); up.destroy(); sockets.delete(client); sockets.delete(up); pairs.delete(pair); };
    client.on('error', done); up.on('error', done); client.on('close', done); up.on('close', done);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  stoppers.push(() => new Promise((r) => {
    for (const s of sockets) s.destroy();
    for (const s of frozen) s.destroy();
    srv.close(() => r());
  }));
  return {
    url: `http://127.0.0.1:${srv.address().port}`,
    cutAll() {
      const n = sockets.size;
      for (const s of sockets) s.resetAndDestroy ? s.resetAndDestroy() : s.destroy();
      sockets.clear();
      return n;
    },
    /**
     * Stops every connection through the proxy without closing it, as a network change does
     * (a VPN switch, a sleeping laptop): both ends keep an open socket that carries nothing.
     * New connections pass.
     */
    freezeAll() {
      for (const { client, up } of pairs) {
        client.unpipe(up); up.unpipe(client);
        client.pause(); up.pause();
        frozen.add(client); frozen.add(up);
        sockets.delete(client); sockets.delete(up);
      }
      const n = pairs.size;
      pairs.clear();
      return n;
    },
  };
}

/**
 * An HTTP proxy with rules that can change while it runs (`proxy.rules = {…}`):
 * - `blockSocketIo`: everything under `/socket.io/` (WebSocket upgrades too) gets 403, as a
 *   proxy that forbids unknown protocols answers;
 * - `holdStreams`: `text/event-stream` responses are held, never flushed, as a proxy that
 *   buffers whole responses does (headers pass, the body never comes).
 */
export async function rulesProxy(upstream, rules = {}) {
  const sockets = new Set();
  const proxy = { rules: { blockSocketIo: false, holdStreams: false, ...rules }, refused: 0, held: 0 };
  const blocked = (url) => proxy.rules.blockSocketIo && /^\/socket\.io(\/|\?|$)/.test(url);
  const srv = http.createServer((req, res) => {
    if (blocked(req.url)) {
      proxy.refused++;
      res.writeHead(403, { 'content-type': 'text/plain' }).end('Forbidden by proxy policy');
      return;
    }
    const up = http.request({
      host: '127.0.0.1', port: upstream, method: req.method, path: req.url, headers: req.headers, agent: false,
    }, (ur) => {
      const hold = proxy.rules.holdStreams && /text\/event-stream/.test(ur.headers['content-type'] || '');
      res.writeHead(ur.statusCode, ur.headers);
      if (hold) {
        proxy.held++;
        // read and keep everything; the client sees headers and then silence
        const kept = [];
        ur.on('data', (d) => kept.push(d));
        ur.on('end', () => res.end(Buffer.concat(kept)));
      } else {
        ur.pipe(res);
      }
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
    res.on('close', () => up.destroy());
  });
  srv.on('upgrade', (req, socket, head) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    if (blocked(req.url)) {
      proxy.refused++;
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      return;
    }
    const up = net.connect(upstream, '127.0.0.1', () => {
      let lines = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(lines + '\r\n');
      if (head.length) up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    sockets.add(up);
    up.on('close', () => { sockets.delete(up); socket.destroy(); });
    up.on('error', () => socket.destroy());
    socket.on('close', () => up.destroy());
  });
  srv.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  stoppers.push(() => new Promise((r) => { for (const s of sockets) s.destroy(); srv.close(() => r()); }));
  proxy.url = `http://127.0.0.1:${srv.address().port}`;
  /** Drops every connection through the proxy (held streams included). */
  proxy.cutAll = () => { for (const s of sockets) s.destroy(); };
  return proxy;
}
