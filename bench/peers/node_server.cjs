// Reference peer: the official Node `socket.io` server. Every client joins room "bench";
// POST /trigger {events: [...]} emits each payload to the room as event "bench".
// Started by `cmem-bench compare` with PORT set and NODE_PATH pointing at the peers folder.
const http = require('node:http');
const { Server } = require('socket.io');

const port = Number(process.env.PORT || 3001);
const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/trigger') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let body;
      try { body = JSON.parse(Buffer.concat(chunks).toString()); } catch { res.writeHead(400).end('bad json'); return; }
      for (const p of body.events || []) io.to('bench').emit('bench', p);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
    return;
  }
  res.writeHead(404).end();
});
const io = new Server(server, { cors: { origin: '*' } });
io.on('connection', (socket) => socket.join('bench'));
server.listen(port, '127.0.0.1');
