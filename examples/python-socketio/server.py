"""A python-socketio server on Redis that sio-relay publishes to (target.adapter =
"python-socketio"), in its two common forms; the tests (tests/it/python_socketio.rs) run both.

    python server.py async PORT REDIS_URL [CHANNEL]   AsyncServer + AsyncRedisManager, under uvicorn
    python server.py flask PORT REDIS_URL [CHANNEL]   Flask-SocketIO with message_queue (threading)

Namespaces "/" and "/admin" exist from the start. A client joins the rooms listed in its `rooms`
query (comma-separated; `#42` joins the number 42) and is then sent "joined" with [its sid, ...its
rooms], as tests/e2e/server.js does. Prints "listening" once the port accepts connections. The
server subscribes to Redis only once its first client has connected: python-socketio's own rule.
"""
import socket
import sys

NAMESPACES = ["/", "/admin"]


def rooms_of(query):
    from urllib.parse import parse_qs

    listed = parse_qs(query).get("rooms", [""])[0]
    return [int(r[1:]) if r.startswith("#") else r for r in listed.split(",") if r]


def bound(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


def run_async(port, url, channel):
    import socketio
    import uvicorn

    # always_connect: the client is connected before the handler runs, so "joined" follows it.
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=socketio.AsyncRedisManager(url, channel=channel),
        always_connect=True,
    )

    def on_connect(namespace):
        async def connect(sid, environ, auth=None):
            rooms = rooms_of(environ.get("QUERY_STRING", ""))
            for room in rooms:
                await sio.enter_room(sid, room, namespace=namespace)
            await sio.emit("joined", [sid, *rooms], to=sid, namespace=namespace)

        sio.on("connect", connect, namespace=namespace)

    for namespace in NAMESPACES:
        on_connect(namespace)
    sock = bound(port)
    server = uvicorn.Server(
        uvicorn.Config(socketio.ASGIApp(sio), ws="wsproto", log_level="warning", lifespan="off")
    )
    print("listening", flush=True)
    server.run(sockets=[sock])


def run_flask(port, url, channel):
    from flask import Flask, request
    from flask_socketio import SocketIO, emit, join_room
    from werkzeug.serving import make_server

    app = Flask(__name__)
    sio = SocketIO(
        app, message_queue=url, channel=channel, async_mode="threading", always_connect=True
    )

    def on_connect(namespace):
        def connect(auth=None):
            rooms = rooms_of(request.query_string.decode())
            for room in rooms:
                join_room(room)
            emit("joined", [request.sid, *rooms])

        sio.on_event("connect", connect, namespace=namespace)

    for namespace in NAMESPACES:
        on_connect(namespace)
    server = make_server("127.0.0.1", port, app, threaded=True)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    mode, port, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    channel = sys.argv[4] if len(sys.argv) > 4 else "socketio"
    {"async": run_async, "flask": run_flask}[mode](port, url, channel)
