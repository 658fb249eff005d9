// Real socket.io-client sockets that print every event they receive as one JSON line.
// Usage: node clients.js '[{"name":"a1","url":"http://127.0.0.1:PORT/nsp","rooms":["lobby"]}, ...]'
// Prints {"ready":true} once every socket has joined its rooms, then
// {"client":NAME,"event":EVENT,"args":[...]} per event, bytes shown as {"$bytes": hex}, and
// {"client":NAME,"disconnected":REASON} when its connection ends, and
// {"client":NAME,"joined":[ROOMS],"id":SOCKET_ID} each time it has joined its rooms (again after a reconnection,
// which socket.io-client does by itself, with its default delays). A spec with
// "brief": true prints, instead of the arguments, [n] where n is the first argument's `n` field
// (for big payloads). An event sent with an acknowledgement id is printed with "ackable": true;
// a spec with "ack": true acknowledges it with {"who": NAME} ("ackDepth": N arrays deep), after
// "ackDelay" milliseconds if given, and prints {"client":NAME,"acked":EVENT}. Each connection is printed as
// {"client":NAME,"connected":true,"recovered":BOOL} (`recovered`: the server's connection state
// recovery gave it what it missed). A spec with "dropAfter": N closes its connection as a network
// failure would once it has received N events; it reconnects by itself, as socket.io-client does.
// A spec with "readyOnConnect": true is ready once connected, for servers that send no "joined".
const { io } = require("socket.io-client");
const { shown } = require("./shown");

const specs = JSON.parse(process.argv[2]);

const joined = new Set();
for (const spec of specs) {
  const query = spec.rooms.length ? { rooms: spec.rooms.join(",") } : {};
  // forceNew: one connection per socket, or sockets to the same server would share the first
  // one's handshake query (and so its rooms).
  const socket = io(spec.url, { query, transports: ["websocket"], forceNew: true });
  socket.on("joined", (rooms) => {
    console.log(JSON.stringify({ client: spec.name, joined: rooms, id: socket.id }));
    joined.add(spec.name);
    if (joined.size === specs.length) console.log(JSON.stringify({ ready: true }));
  });
  socket.on("connect", () => {
    console.log(JSON.stringify({ client: spec.name, connected: true, recovered: socket.recovered }));
    if (spec.readyOnConnect && !joined.has(spec.name)) {
      joined.add(spec.name);
      if (joined.size === specs.length) console.log(JSON.stringify({ ready: true }));
    }
  });
  let received = 0;
  socket.onAny((event, ...args) => {
    if (event === "joined") return;
    received += 1;
    if (received === spec.dropAfter) setImmediate(() => socket.io.engine.close());
    // socket.io-client passes the acknowledgement callback last, to onAny listeners too.
    const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
    const printed = spec.brief ? [args[0] && args[0].n] : args.map(shown);
    const line = { client: spec.name, event, args: printed };
    if (ack) line.ackable = true;
    console.log(JSON.stringify(line));
    if (ack && spec.ack) {
      setTimeout(() => {
        // "ackDepth": N wraps the argument in N arrays, as a client may.
        let argument = { who: spec.name };
        for (let i = 0; i < (spec.ackDepth || 0); i++) argument = [argument];
        ack(argument);
        console.log(JSON.stringify({ client: spec.name, acked: event }));
      }, spec.ackDelay || 0);
    }
  });
  socket.on("disconnect", (reason) => {
    console.log(JSON.stringify({ client: spec.name, disconnected: reason }));
  });
}

process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
