// A Socket.IO server on @socket.io/redis-streams-adapter, with connection state recovery: run
// sio-relay with `target.adapter = "streams"` next to it, and every entry XADDed to the relay's
// stream reaches its clients, and a client that loses its connection for a moment gets what it
// missed when it comes back (socket.recovered is true).
//   PORT (default 3000), REDIS_URL (default redis://127.0.0.1:6379)
const { createClient } = require("redis");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-streams-adapter");

async function main() {
  const redis = createClient({ url: process.env.REDIS_URL || "redis://127.0.0.1:6379" });
  redis.on("error", (err) => console.error("redis:", err.message));
  await redis.connect();
  const io = new Server({
    // The same stream name and maxLen as the relay's target.stream and target.max_len.
    adapter: createAdapter(redis, { streamName: "socket.io", maxLen: 10000 }),
    connectionStateRecovery: { maxDisconnectionDuration: 2 * 60 * 1000 },
  });
  io.on("connection", (socket) => {
    // A room per user, named as producers target it: XADD sio-relay * room user:42 event ...
    const user = socket.handshake.auth.user;
    if (user && !socket.recovered) socket.join(`user:${user}`);
  });
  const port = Number(process.env.PORT || 3000);
  io.listen(port);
  console.log(`streams-adapter server on port ${port}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
