// The sio-relay demo: one Socket.IO server clustered through @socket.io/redis-adapter, as a real
// application runs it, and a page that shows every event its sockets receive.
//
//   examples/demo/start                      # or: cd examples/demo && npm ci && npm start
//   PORT=3000 REDIS_URL=redis://127.0.0.1:6379 HOST=127.0.0.1 (the defaults)
//
// The page picks a namespace and rooms (also from its URL: /?nsp=/admin&rooms=demo,vip); the
// server joins the socket to the rooms it asks for. "/" and "/admin" exist from the start; any
// other namespace is created when a page first connects to it (until then, sio-relay holds the
// entries for it: no server listens there).
const http = require("node:http");
const fs = require("node:fs");
const path = require("node:path");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || "127.0.0.1";
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";

// The page's own files, read once: the server never serves anything else from disk.
const publicDir = path.join(__dirname, "public");
const assets = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/demo.js": ["demo.js", "text/javascript; charset=utf-8"],
  "/demo.css": ["demo.css", "text/css; charset=utf-8"],
};
const files = Object.fromEntries(
  Object.entries(assets).map(([url, [file, type]]) => [
    url,
    { body: fs.readFileSync(path.join(publicDir, file)), type },
  ]),
);

const server = http.createServer((req, res) => {
  const file = files[new URL(req.url, "http://demo").pathname];
  if (!file) {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    return;
  }
  res.writeHead(200, { "content-type": file.type, "cache-control": "no-store" }).end(file.body);
});

// A room name as the page sends it: "#42" is the number 42 (socket.join(42)), anything else a string.
function room(name) {
  return /^#-?\d+$/.test(name) ? Number(name.slice(1)) : name;
}

function onConnection(socket) {
  const { rooms } = socket.handshake.auth;
  const asked = (Array.isArray(rooms) ? rooms : [])
    .filter((r) => typeof r === "string" && r !== "")
    .slice(0, 20)
    .map(room);
  socket.join(asked);
  // The page shows the rooms the server joined, the socket's own ID (also a room) included.
  socket.emit("demo:joined", { nsp: socket.nsp.name, id: socket.id, rooms: [...socket.rooms] });
  console.log(`${socket.nsp.name} ${socket.id} joined ${JSON.stringify(asked)}`);
}

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  for (const client of [pub, sub]) {
    client.on("error", (err) => console.error(`redis ${redisUrl}: ${err.message}`));
  }
  await Promise.all([pub.connect(), sub.connect()]);

  const io = new Server(server, { adapter: createAdapter(pub, sub) });
  io.on("connection", onConnection);
  io.of("/admin").on("connection", onConnection);
  io.of(/^\/[A-Za-z0-9_:.-]{1,64}$/).on("connection", onConnection);

  server.listen(port, host, () => {
    const url = `http://${host}:${server.address().port}`;
    console.log(`sio-relay demo: open ${url} (Socket.IO on ${redisUrl})`);
    console.log(
      `then: redis-cli XADD sio-relay '*' room demo event chat data '{"text":"Welcome!"}'`,
    );
  });
}

// @socket.io/redis-adapter 8.3 publishes its answers (and its own broadcasts) without handling the
// promise: a Redis connection dropped at that moment would otherwise end the process.
process.on("unhandledRejection", (err) => {
  console.error(`sio-relay demo: unhandled rejection: ${err && err.stack ? err.stack : err}`);
});

main().catch((err) => {
  console.error(`sio-relay demo: ${err.message} (is Redis running at ${redisUrl}?)`);
  process.exit(1);
});
