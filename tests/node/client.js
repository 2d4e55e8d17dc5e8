// Node's `ws` client for tests/test_wire.py: connects (permessage-deflate offered, as by
// default), subscribes, prints the negotiated extensions, then each of the first N kill
// messages as one line of JSON text, exactly as received; exits 0 when it has N.
"use strict";
const WebSocket = require("ws");

const [url, count] = [process.argv[2], Number(process.argv[3])];
const ws = new WebSocket(url, { perMessageDeflate: true });
let kills = 0;
ws.on("upgrade", (res) => {
  process.stdout.write(JSON.stringify({ extensions: res.headers["sec-websocket-extensions"] || null }) + "\n");
});
ws.on("open", () => ws.send(JSON.stringify({ action: "sub", channel: "kills" })));
ws.on("message", (data, isBinary) => {
  const text = data.toString("utf8");
  const message = JSON.parse(text);
  if (message.action === "subscribed") {
    process.stdout.write(JSON.stringify({ ready: true, binary: isBinary }) + "\n");
  } else if (message.action === "kill") {
    process.stdout.write(text + "\n");
    if (++kills === count) ws.close(1000);
  }
});
// exitCode, not process.exit(): exit() drops what stdout still holds for a full pipe (a slow
// reader under load got a last line cut short); Node exits once the socket is gone and stdout
// is written out. ws emits "close" after "error".
let failed = false;
ws.on("close", () => {
  process.exitCode = failed ? 3 : kills === count ? 0 : 2;
});
ws.on("error", (err) => {
  failed = true;
  process.stderr.write(String(err) + "\n");
});
