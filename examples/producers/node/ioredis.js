// Appends one sio-relay entry with ioredis 5: the clients in room "user:42" of namespace "/"
// receive `order:shipped` with one argument, {"orderId":"A-1001","carrier":"UPS"}.
//
//   npm ci && node ioredis.js           (REDIS_URL, STREAM override the defaults)
//
// Field values are strings: JSON arguments go through JSON.stringify. MAXLEN ~ caps the stream;
// keep it far above what the relay may have to catch up on (entries trimmed unread are lost).
const Redis = require("ioredis");

async function main() {
  const redis = new Redis(process.env.REDIS_URL || "redis://127.0.0.1:6379");
  const id = await redis.xadd(
    process.env.STREAM || "sio-relay",
    "MAXLEN", "~", 1000000,
    "*",
    "room", "user:42",
    "event", "order:shipped",
    "data", JSON.stringify({ orderId: "A-1001", carrier: "UPS" }),
  );
  console.log(id);
  await redis.quit();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
