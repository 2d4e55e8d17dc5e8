// The reference for bench/fanout.py: Node's `ws` (tests/node) sending a plain text frame to every
// socket. POST /frame with a kill frame's bytes broadcasts them as they are; any client message is
// answered {"action":"subscribed"} (the bench's clients wait for it); GET /health answers 200.
"use strict";
const http = require("http");
const WebSocket = require("ws");

const port = Number(process.argv[2]);
const server = http.createServer((req, res) => {
  if (req.method === "POST" && req.url === "/frame") {
    const parts = [];
    req.on("data", (chunk) => parts.push(chunk));
    req.on("end", () => {
      const frame = Buffer.concat(parts);
      for (const client of wss.clients) {
        if (client.readyState === WebSocket.OPEN) client.send(frame, { binary: false });
      }
      res.writeHead(202).end();
    });
  } else {
    res.writeHead(200, { "Content-Type": "application/json" }).end('{"status":"ok"}');
  }
});
// perMessageDeflate off: the plain frame, the figure the issue compares against.
const wss = new WebSocket.Server({ server, path: "/ws", perMessageDeflate: false });
wss.on("connection", (ws) => {
  ws.on("message", () => ws.send('{"action":"subscribed","channels":["kills"]}'));
});
server.listen(port, "127.0.0.1");
