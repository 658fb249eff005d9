// The demo page: connects one socket to the chosen namespace and rooms, and lists every event it
// receives. Everything that came from the stream is shown with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
$("nsp").value = params.get("nsp") || $("nsp").value;
$("rooms").value = params.get("rooms") ?? $("rooms").value;

let socket = null;
let received = 0;
// The socket was connected once: a later connection is a reconnection, marked in the list.
let connectedBefore = false;

function namespace() {
  const nsp = $("nsp").value.trim() || "/";
  return nsp.startsWith("/") ? nsp : `/${nsp}`;
}

function roomList() {
  return $("rooms").value.split(",").map((r) => r.trim()).filter(Boolean);
}

// The redis-cli line that reaches this page as it is connected now.
function showCommand() {
  const nsp = namespace();
  const rooms = roomList();
  const words = ["redis-cli XADD sio-relay '*'"];
  if (nsp !== "/") words.push(`nsp ${nsp}`);
  if (rooms.length > 0) {
    const first = rooms[0];
    words.push(first.startsWith("#") ? `rooms '[${first.slice(1)}]'` : `room ${first}`);
  }
  words.push(`event chat data '{"text":"Welcome!"}'`);
  $("command").textContent = words.join(" ");
}

// Event arguments as text: bytes (an ArrayBuffer in a browser) as their length and hex.
function shown(value) {
  return JSON.stringify(value, (_key, v) => {
    if (v instanceof ArrayBuffer) {
      const hex = [...new Uint8Array(v)].map((b) => b.toString(16).padStart(2, "0")).join("");
      return `<${v.byteLength} bytes: ${hex}>`;
    }
    return v;
  });
}

function record(nsp, event, args) {
  received += 1;
  $("count").textContent = String(received);
  const item = document.createElement("li");
  item.className = "event";
  item.dataset.event = event;
  item.dataset.nsp = nsp;
  const name = document.createElement("span");
  name.className = "event-name";
  name.textContent = event;
  const meta = document.createElement("span");
  meta.className = "event-meta";
  meta.textContent = ` on ${nsp} at ${new Date().toLocaleTimeString()}`;
  const body = document.createElement("code");
  body.className = "event-args";
  body.textContent = args.map(shown).join(", ");
  item.append(name, meta, body);
  $("events").prepend(item);
}

// A line in the list between events: where the socket reconnected.
function mark(text) {
  const item = document.createElement("li");
  item.className = "mark";
  item.textContent = text;
  $("events").prepend(item);
}

function setStatus(text) {
  $("status").textContent = text;
  $("status").className = text;
  document.body.dataset.status = text;
}

function connect() {
  if (socket) socket.disconnect();
  const nsp = namespace();
  const rooms = roomList();
  const url = new URL(location.href);
  url.searchParams.set("nsp", nsp);
  url.searchParams.set("rooms", rooms.join(","));
  history.replaceState(null, "", url);
  showCommand();
  setStatus("connecting");
  // `auth`, not `query`: the query belongs to the connection that sockets of every namespace share.
  socket = io(nsp, { auth: { rooms } });
  connectedBefore = false;
  socket.on("connect", () => {
    if (connectedBefore) mark(`reconnected at ${new Date().toLocaleTimeString()}: what follows came after the outage`);
    connectedBefore = true;
    setStatus("connected");
  });
  // While the client retries on its own (`socket.active`), the page says so rather than an error:
  // the server being away is what the demo's outage story is about.
  const away = (why) => setStatus(socket.active ? "reconnecting" : why);
  socket.on("disconnect", () => away("disconnected"));
  socket.on("connect_error", (err) => {
    away(`error: ${err.message}`);
    $("status").title = err.message;
  });
  socket.on("demo:joined", ({ nsp: joined, id, rooms: inRooms }) => {
    $("joined-nsp").textContent = joined;
    $("socket-id").textContent = id;
    const list = $("joined-rooms");
    list.replaceChildren(
      ...inRooms.map((r) => {
        const chip = document.createElement("span");
        chip.className = "room";
        chip.textContent = typeof r === "number" ? `#${r}` : r;
        chip.title = r === id ? "this socket's own room" : "joined";
        return chip;
      }),
    );
    document.body.dataset.joined = `${joined} ${inRooms.join(",")}`;
  });
  socket.onAny((event, ...args) => {
    if (event === "demo:joined") return;
    // An emit with client acknowledgements (`ack`) passes a callback last: acknowledge it.
    const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
    record(nsp, event, args);
    if (ack) ack({ seen: true });
  });
}

$("select").addEventListener("submit", (e) => {
  e.preventDefault();
  connect();
});
$("rooms").addEventListener("input", showCommand);
$("nsp").addEventListener("input", showCommand);
connect();
