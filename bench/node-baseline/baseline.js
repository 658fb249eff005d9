// The baseline: the stream relay a Node.js user would write with the Socket.IO docs' tools.
// XREADGROUP in batches, emit each entry with @socket.io/redis-emitter, XACK the batch.
// Usage: node baseline.js REDIS_URL STREAM GROUP
const { createClient } = require("redis");
const { Emitter } = require("@socket.io/redis-emitter");

const [url, stream, group] = process.argv.slice(2);

async function main() {
  const client = createClient({ url });
  await client.connect();
  // Blocking reads get their own connection, as the redis docs advise.
  const reader = client.duplicate();
  await reader.connect();
  try {
    await client.xGroupCreate(stream, group, "0", { MKSTREAM: true });
  } catch (err) {
    if (!String(err).includes("BUSYGROUP")) throw err;
  }
  const emitter = new Emitter(client);
  const consumer = `node-${process.pid}`;
  console.log(JSON.stringify({ ready: true }));
  for (;;) {
    const reply = await reader.xReadGroup(group, consumer, { key: stream, id: ">" }, { COUNT: 256, BLOCK: 1000 });
    if (!reply) continue;
    const ids = [];
    for (const { id, message } of reply[0].messages) {
      let target = message.nsp ? emitter.of(message.nsp) : emitter;
      if (message.room) target = target.to(message.room);
      if (message.data !== undefined) target.emit(message.event, JSON.parse(message.data));
      else target.emit(message.event);
      ids.push(id);
    }
    await client.xAck(stream, group, ids);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
