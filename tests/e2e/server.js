// A Socket.IO server clustered through @socket.io/redis-adapter, as users run it.
// Usage: node server.js PORT REDIS_URL [OPTIONS_JSON]
// OPTIONS_JSON (all optional):
//   "adapter": "classic" (createAdapter, the default), "sharded" (createShardedAdapter) or "streams"
//     (@socket.io/redis-streams-adapter)
//   "streamName": the streams adapter's stream ("socket.io" by default)
//   "streamCount", "useShardedPubSub": the streams adapter's options of those names
//   "namespaces": the namespaces that exist from the start (["/", "/admin"] by default)
//   "recovery": true for connection state recovery (streams adapter): a client that reconnects
//     within a minute gets what it missed, each event with the stream entry's ID as its last
//     argument
//   "parser": "json" for the classic adapter with a JSON parser instead of notepack
//   "subscriptionMode": the sharded adapter's option ("dynamic", "dynamic-private", "static")
//   "cluster": true to connect to a Redis Cluster through REDIS_URL (comma-separated seed URLs)
//   "client": "ioredis" to use ioredis (a Cluster with shardedSubscribers) instead of node-redis
//   "sentinel": the master's name: REDIS_URL lists the sentinels, and ioredis asks them for the
//     master (again after a failover, which node-redis does not do)
//   "stack": "4.5" for socket.io 4.5.4 with @socket.io/redis-adapter 7.2.0 (classic adapter only)
// Namespaces "/" and "/admin" (or "namespaces") exist from the start; a client joins the rooms listed in its
// `rooms` handshake query (comma-separated; `#42` joins the number 42) and is told so with a
// "joined" event. Every call of a namespace's serverSideEmit listeners is printed as
// {"serverSideEmit":[NSP, EVENT, ...ARGS]}.
const { shown } = require("./shown");

const [port, redisUrl, optionsJson] = process.argv.slice(2);
const options = JSON.parse(optionsJson || "{}");
const older = options.stack === "4.5";
const { Server } = require(older ? "socket.io-4.5" : "socket.io");
const { createAdapter, createShardedAdapter } = require(
  older ? "@socket.io/redis-adapter-7.2" : "@socket.io/redis-adapter",
);

async function clients() {
  const urls = redisUrl.split(",");
  if (options.client === "ioredis") {
    const Redis = require("ioredis");
    const nodes = urls.map((u) => {
      const { hostname, port } = new URL(u);
      return { host: hostname, port: Number(port) };
    });
    const make = () =>
      options.cluster
        ? new Redis.Cluster(nodes, { shardedSubscribers: true })
        : options.sentinel
          ? new Redis({ sentinels: nodes, name: options.sentinel })
          : new Redis(urls[0]);
    const pub = make();
    const sub = make();
    pub.on("error", () => {});
    sub.on("error", () => {});
    return [pub, sub];
  }
  const { createClient, createCluster } = require("redis");
  const pub = options.cluster
    ? createCluster({ rootNodes: urls.map((url) => ({ url })) })
    : createClient({ url: urls[0] });
  const sub = pub.duplicate();
  // Without listeners node-redis throws on connection errors; a restarted Redis is expected.
  pub.on("error", () => {});
  sub.on("error", () => {});
  await Promise.all([pub.connect(), sub.connect()]);
  return [pub, sub];
}

async function main() {
  const [pub, sub] = await clients();
  let adapter;
  const serverOptions = {};
  if (options.adapter === "streams") {
    const { createAdapter: createStreamsAdapter } = require("@socket.io/redis-streams-adapter");
    // The streams adapter reads with a blocking XREAD on a duplicate of the client it is given.
    adapter = createStreamsAdapter(pub, {
      streamName: options.streamName || "socket.io",
      streamCount: options.streamCount || 1,
      useShardedPubSub: !!options.useShardedPubSub,
    });
    if (options.recovery) {
      serverOptions.connectionStateRecovery = { maxDisconnectionDuration: 60000 };
    }
  } else if (options.adapter === "sharded") {
    adapter = createShardedAdapter(pub, sub, {
      subscriptionMode: options.subscriptionMode || "dynamic",
    });
  } else if (options.parser === "json") {
    adapter = createAdapter(pub, sub, {
      parser: { encode: (value) => JSON.stringify(value), decode: (text) => JSON.parse(text) },
    });
  } else {
    adapter = createAdapter(pub, sub);
  }
  const io = new Server(Number(port), { adapter, ...serverOptions });
  for (const name of options.namespaces || ["/", "/admin"]) {
    const nsp = io.of(name);
    nsp.on("connection", (socket) => {
      const rooms = socket.handshake.query.rooms;
      const room = (r) => (r.startsWith("#") ? Number(r.slice(1)) : r);
      if (rooms) socket.join(String(rooms).split(",").map(room));
      socket.emit("joined", [...socket.rooms]);
    });
    // serverSideEmit listeners: whatever event the relay sends (EventEmitter has no catch-all).
    for (const event of ["sse", "cache:flush"]) {
      nsp.on(event, (...args) => {
        console.log(JSON.stringify({ serverSideEmit: [name, event, ...args.map(shown)] }));
      });
    }
  }
  console.log(JSON.stringify({ listening: Number(port) }));
}

// @socket.io/redis-adapter 8.3 publishes its answers (and its own broadcasts) without handling the
// promise: a Redis connection dropped at that moment would otherwise end the process.
process.on("unhandledRejection", (err) => {
  console.error("unhandled rejection:", err);
});

// Exit with the test that started us.
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
main().catch((err) => {
  console.error(err);
  process.exit(1);
});
