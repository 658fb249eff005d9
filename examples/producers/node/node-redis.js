// Appends one sio-relay entry with node-redis 4: the clients in room "user:42" of namespace "/"
// receive `order:shipped` with one argument, {"orderId":"A-1001","carrier":"UPS"}.
//
//   npm ci && node node-redis.js        (REDIS_URL, STREAM override the defaults)
//
// Field values are strings: JSON arguments go through JSON.stringify. MAXLEN ~ caps the stream;
// keep it far above what the relay may have to catch up on (entries trimmed unread are lost).
const { createClient } = require("redis");

async function main() {
  const redis = createClient({ url: process.env.REDIS_URL || "redis://127.0.0.1:6379" });
  await redis.connect();
  const id = await redis.xAdd(
    process.env.STREAM || "sio-relay",
    "*",
    {
      room: "user:42",
      event: "order:shipped",
      data: JSON.stringify({ orderId: "A-1001", carrier: "UPS" }),
    },
    { TRIM: { strategy: "MAXLEN", strategyModifier: "~", threshold: 1000000 } },
  );
  console.log(id);
  await redis.quit();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
