-- Socket.IO servers of a namespace, counted as their adapter's serverCount() does: the subscribers
-- of `<servers prefix><namespace>#` (PUBSUB NUMSUB of the classic adapter's request channel, which
-- only servers subscribe to; SHARDNUMSUB of the sharded adapter's namespace channel), or, when
-- `per_namespace` is not '1', of the prefix itself (python-socketio's one channel, the same count
-- for every namespace), minus the `sio-relay monitor`s watching it, which say so on
-- `<monitor prefix><channel>}`.
local function count_servers(command, prefix, per_namespace, monitor_prefix, namespace)
  local channel = prefix
  if per_namespace == '1' then
    channel = prefix .. namespace .. '#'
  end
  if monitor_prefix == '' then
    return redis.call('PUBSUB', command, channel)[2]
  end
  local counts = redis.call('PUBSUB', command, channel, monitor_prefix .. channel .. '}')
  return math.max(counts[2] - counts[4], 0)
end
