// PostgreSQL 17 with TimescaleDB (PGlite, WASM) on a TCP port, for tests of
// the collector's TimescaleDB SQL. Not a database server for production use.
//
//   node server.mjs [--host 127.0.0.1] [--port 0]
//
// Prints "pglite-timescale: listening on HOST:PORT" once it accepts
// connections. What this wrapper adds to PGlite:
//   - one connection at a time (PGlite has a single session); later
//     connections wait in a queue;
//   - only whole protocol messages are passed to PGlite (a TCP read may end
//     in the middle of one, and large messages span many reads);
//   - SSLRequest and GSSENCRequest are answered "N", so clients using
//     sslmode=prefer fall back to plain TCP;
//   - when a client disconnects, its transaction is rolled back and its
//     session state (prepared statements, SETs) discarded.
// COPY FROM STDIN is not supported by PGlite: load data with INSERT.
import net from "node:net";
import { PGlite } from "@electric-sql/pglite";
import { timescaledb } from "@electric-sql/pglite/timescaledb";

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const host = option("--host", "127.0.0.1");
const port = Number(option("--port", "0"));

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;

const db = await PGlite.create({ extensions: { timescaledb } });
await db.exec("SELECT 1");

// One connection at a time: each waits for the previous one to finish.
let turn = Promise.resolve();

function serve(socket) {
  turn = turn.then(() => session(socket)).catch((e) => console.error("pglite-timescale: session failed:", e));
}

function session(socket) {
  return new Promise((finish) => {
    let buffer = Buffer.alloc(0);
    let started = false;
    let work = Promise.resolve();
    let closed = false;

    const close = async () => {
      if (closed) return;
      closed = true;
      await work.catch(() => {});
      try {
        await db.exec("ROLLBACK");
        await db.exec("DISCARD ALL");
      } catch (e) {
        console.error("pglite-timescale: resetting the session:", e.message);
      }
      socket.destroy();
      finish();
    };

    // Split the buffer into whole messages; keep an incomplete tail.
    const takeMessages = () => {
      const whole = [];
      let offset = 0;
      for (;;) {
        if (!started) {
          if (buffer.length - offset < 8) break;
          const length = buffer.readInt32BE(offset);
          if (buffer.length - offset < length) break;
          const code = buffer.readInt32BE(offset + 4);
          const message = buffer.subarray(offset, offset + length);
          offset += length;
          if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
            socket.write("N");
            continue;
          }
          if (code === CANCEL_REQUEST) {
            whole.push(null);
            break;
          }
          started = true;
          whole.push(message);
        } else {
          if (buffer.length - offset < 5) break;
          const length = buffer.readInt32BE(offset + 1) + 1;
          if (buffer.length - offset < length) break;
          const message = buffer.subarray(offset, offset + length);
          offset += length;
          if (message[0] === 0x58 /* Terminate */) {
            whole.push(null);
            break;
          }
          whole.push(message);
        }
      }
      buffer = buffer.subarray(offset);
      return whole;
    };

    socket.on("data", (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      const messages = takeMessages();
      if (messages.length === 0) return;
      const end = messages.includes(null);
      const payload = Buffer.concat(messages.filter((m) => m !== null));
      work = work.then(async () => {
        if (payload.length > 0 && !closed) {
          const reply = await db.execProtocolRaw(new Uint8Array(payload));
          if (reply.length > 0 && socket.writable) socket.write(Buffer.from(reply));
        }
      });
      if (end) work.then(close, close);
    });
    socket.on("error", () => close());
    socket.on("close", () => close());
  });
}

const server = net.createServer(serve);
server.listen(port, host, () => {
  const address = server.address();
  console.log(`pglite-timescale: listening on ${address.address}:${address.port}`);
});
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
