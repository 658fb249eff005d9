-- Takes one entry out of the group for good: writes a record of it (a dead letter, a result) to the
-- stream `out`, trimmed to about `max_len` entries (0: not trimmed), acknowledges the entry and
-- drops it from the held record. What could fail is checked before anything is done (a script
-- stops at its first failing command, and a record written without its XACK would be written again
-- when the entry comes back). `record()` gives the record's fields, or nil for no record (the entry
-- was deleted from the stream). Returns an error reply, 0 when the entry is not pending for
-- `consumer` (nothing done), or 1.
local function settle(stream, group, consumer, id, held_record, out, what, max_len, record)
  local out_type = redis.call('TYPE', out)['ok']
  if out_type ~= 'none' and out_type ~= 'stream' then
    return redis.error_reply('SIORELAY WRONGTYPE the ' .. what .. ' key ' .. out .. ' holds a ' .. out_type)
  end
  for _, command in ipairs({ { 'XADD', out, '*', 'f', 'v' }, { 'XACK', stream, group, id },
    { 'HDEL', held_record, id } }) do
    if not redis.acl_check_cmd(unpack(command)) then
      return redis.error_reply('SIORELAY NOPERM the ACL user may not run ' .. command[1] .. ' on ' .. command[2])
    end
  end
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  if pending[1] == nil or pending[1][2] ~= consumer then
    return 0
  end
  local fields = record()
  if fields then
    local xadd = { 'XADD', out }
    if tonumber(max_len) > 0 then
      xadd = { 'XADD', out, 'MAXLEN', '~', max_len }
    end
    xadd[#xadd + 1] = '*'
    for _, item in ipairs(fields) do
      xadd[#xadd + 1] = item
    end
    redis.call(unpack(xadd))
  end
  acknowledge(stream, group, { id })
  redis.call('HDEL', held_record, id)
  return 1
end
