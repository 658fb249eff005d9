// A Socket.IO server clustered through @socket.io/redis-adapter, as users run it.
// Usage: node server.js PORT REDIS_URL
// Namespaces "/" and "/admin" exist from the start; a client joins the rooms listed in its
// `rooms` handshake query (comma-separated) and is told so with a "joined" event.
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const [port, redisUrl] = process.argv.slice(2);

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  // Without listeners node-redis throws on connection errors; a restarted Redis is expected.
  pub.on("error", () => {});
  sub.on("error", () => {});
  await Promise.all([pub.connect(), sub.connect()]);
  const io = new Server(Number(port), { adapter: createAdapter(pub, sub) });
  for (const name of ["/", "/admin"]) {
    io.of(name).on("connection", (socket) => {
      const rooms = socket.handshake.query.rooms;
      if (rooms) socket.join(String(rooms).split(","));
      socket.emit("joined", [...socket.rooms]);
    });
  }
  console.log(JSON.stringify({ listening: Number(port) }));
}

// Exit with the test that started us.
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
main().catch((err) => {
  console.error(err);
  process.exit(1);
});
