"""Appends one sio-relay entry with redis-py: the clients in room "user:42" of namespace "/"
receive `order:shipped` with one argument, {"orderId": "A-1001", "carrier": "UPS"}.

    python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
    .venv/bin/python produce.py          (REDIS_URL, STREAM override the defaults)

Field values are strings: JSON arguments go through json.dumps. maxlen with approximate=True caps
the stream; keep it far above what the relay may have to catch up on (entries trimmed unread are
lost).
"""
import json
import os

import redis

r = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
entry_id = r.xadd(
    os.environ.get("STREAM", "sio-relay"),
    {
        "room": "user:42",
        "event": "order:shipped",
        "data": json.dumps({"orderId": "A-1001", "carrier": "UPS"}),
    },
    maxlen=1_000_000,
    approximate=True,
)
print(entry_id.decode())
