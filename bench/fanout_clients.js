// bench/fanout.py's subscribers in Node (`--clients node`): N raw WebSocket clients on one event loop,
// cheap enough that the time a kill takes to reach them is the server's, not theirs (1,000 sockets in
// Python spend ~20 ms reading one kill each). Each socket subscribes to `kills` and records, per kill
// frame, its arrival time on CLOCK_MONOTONIC (process.hrtime, the clock of Python's time.monotonic());
// the k-th kill frame a socket gets is the k-th kill posted, since a socket gets its kills in order.
// The first socket also reads each kill's id, so the bench can check that order.
//
//   node bench/fanout_clients.js PORT COUNT DEFLATE(0|1) [PATH]
// prints {"connected":N,"failed":N,"seconds":S} once every socket is subscribed, then answers
// one JSON line per command line on stdin: received, reset, report, exit.
"use strict";
const net = require("net");
const crypto = require("crypto");
const readline = require("readline");
const zlib = require("zlib");

const [port, count, deflate, path] = [Number(process.argv[2]), Number(process.argv[3]), process.argv[4] === "1", process.argv[5] || "/ws"];
const SUB = Buffer.from('{"action":"sub","channel":"kills"}');
const KILL = Buffer.from('{"action":"kill"');
const SUBSCRIBED = Buffer.from('{"action":"subscribed"');
let arrivals = []; // arrivals[k]: when each socket got its k-th kill frame (seconds)
let received = 0;
let firstIds = []; // the kill ids the first socket got, in order
const sockets = [];
const states = []; // each socket's count of kill frames since the last reset

function now() {
  return Number(process.hrtime.bigint()) / 1e9;
}

function masked(payload, opcode) {
  const mask = crypto.randomBytes(4);
  const out = Buffer.alloc(6 + payload.length);
  out[0] = 0x80 | opcode;
  out[1] = 0x80 | payload.length; // small payloads only
  mask.copy(out, 2);
  for (let i = 0; i < payload.length; i++) out[6 + i] = payload[i] ^ mask[i & 3];
  return out;
}

function killId(payload, compressed) {
  const head = compressed
    ? zlib.inflateRawSync(payload.subarray(0, 400), { finishFlush: zlib.constants.Z_SYNC_FLUSH })
    : payload.subarray(0, 200);
  const match = /"killmail_id":(\d+)/.exec(head.toString("latin1"));
  return match ? Number(match[1]) : null;
}

function connect(first) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1");
    sock.setNoDelay(true);
    let buf = Buffer.alloc(0);
    let upgraded = false;
    let ready = false;
    const state = { kills: 0 };
    const fail = (err) => {
      if (!ready) reject(err);
    };
    sock.on("error", fail);
    sock.on("close", () => fail(new Error("closed")));
    sock.on("connect", () => {
      const key = crypto.randomBytes(16).toString("base64");
      const offer = deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "";
      sock.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${offer}\r\n`,
      );
    });
    sock.on("data", (data) => {
      const t = now();
      buf = buf.length ? Buffer.concat([buf, data]) : data;
      if (!upgraded) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        if (!buf.subarray(0, 12).equals(Buffer.from("HTTP/1.1 101"))) return fail(new Error(buf.subarray(0, 80).toString()));
        buf = buf.subarray(end + 4);
        upgraded = true;
        sock.write(masked(SUB, 1));
      }
      let pos = 0;
      while (buf.length - pos >= 2) {
        const opcode = buf[pos] & 0x0f;
        const compressed = (buf[pos] & 0x40) !== 0;
        let n = buf[pos + 1] & 0x7f;
        let head = 2;
        if (n === 126) {
          if (buf.length - pos < 4) break;
          n = buf.readUInt16BE(pos + 2);
          head = 4;
        } else if (n === 127) {
          if (buf.length - pos < 10) break;
          n = Number(buf.readBigUInt64BE(pos + 2));
          head = 10;
        }
        if (buf.length - pos < head + n) break;
        const payload = buf.subarray(pos + head, pos + head + n);
        pos += head + n;
        if (opcode === 1) {
          if (!ready) {
            if (payload.subarray(0, SUBSCRIBED.length).equals(SUBSCRIBED)) {
              ready = true;
              sockets.push(sock);
              states.push(state);
              resolve();
            }
          } else if (compressed || payload.subarray(0, KILL.length).equals(KILL)) {
            // Only kill frames are deflated by the server; plain ones say so.
            (arrivals[state.kills] || (arrivals[state.kills] = [])).push(t);
            state.kills++;
            received++;
            if (first) firstIds.push(killId(payload, compressed));
          }
        } else if (opcode === 9) {
          sock.write(masked(payload.subarray(0, 125), 0xa)); // the server's heartbeat
        } else if (opcode === 8) {
          sock.destroy();
        }
      }
      buf = pos === buf.length ? Buffer.alloc(0) : buf.subarray(pos);
    });
  });
}

async function main() {
  const started = now();
  let failed = 0;
  let next = 0;
  async function worker() {
    while (next < count) {
      const i = next++;
      let ok = false;
      for (let attempt = 0; attempt < 5 && !ok; attempt++) {
        try {
          await connect(i === 0);
          ok = true;
        } catch {
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      if (!ok) failed++;
    }
  }
  await Promise.all(Array.from({ length: 64 }, worker));
  process.stdout.write(JSON.stringify({ connected: count - failed, failed, seconds: now() - started }) + "\n");
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line === "received") {
      process.stdout.write(JSON.stringify(received) + "\n");
    } else if (line === "reset") {
      arrivals = [];
      received = 0;
      firstIds = [];
      for (const state of states) state.kills = 0;
      process.stdout.write("true\n");
    } else if (line === "report") {
      process.stdout.write(JSON.stringify({ arrivals, ids: firstIds }) + "\n");
    } else if (line === "exit") {
      // RST, not FIN: thousands of sockets in TIME_WAIT would eat the loopback's ports.
      for (const sock of sockets) sock.resetAndDestroy();
      process.stdout.write("true\n");
      process.exit(0);
    }
  }
}

main();
