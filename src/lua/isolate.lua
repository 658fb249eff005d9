#!lua
-- Dead-letters the one entry that made Redis refuse every batch it was part of, by a path that
-- cannot fail the way the delivery script did: its fields are packed into a single MessagePack
-- value (`x-dead-fields`, alternating names and values) instead of being passed to XADD one by one,
-- so neither their number nor their content matters. It checks what could fail before acting, as
-- the delivery script does, and acknowledges the entry with its dead letter.
--
-- KEYS[1] source stream; KEYS[2] dead-letter stream; KEYS[3] held record
-- ARGV[1] consumer group; ARGV[2] this consumer; ARGV[3] entry ID; ARGV[4] delivery count;
-- ARGV[5] the error Redis gave for its batch; ARGV[6] dead-letter MAXLEN ~ (0: none)
-- Returns 1 when dead-lettered (or found deleted, and acknowledged), 0 when it is no longer
-- pending for this consumer.
local stream, dead, held_record = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, id = ARGV[1], ARGV[2], ARGV[3]
local dead_type = redis.call('TYPE', dead)['ok']
if dead_type ~= 'none' and dead_type ~= 'stream' then
  return redis.error_reply('SIORELAY WRONGTYPE the dead-letter stream key ' .. dead .. ' holds a ' .. dead_type)
end
for _, command in ipairs({ { 'XADD', dead, '*', 'f', 'v' }, { 'XACK', stream, group, id },
  { 'HDEL', held_record, id } }) do
  if not redis.acl_check_cmd(unpack(command)) then
    return redis.error_reply('SIORELAY NOPERM the ACL user may not run ' .. command[1] .. ' on ' .. command[2])
  end
end
local pending = redis.call('XPENDING', stream, group, id, id, 1)
if pending[1] == nil or pending[1][2] ~= consumer then
  return 0
end
local found = redis.call('XRANGE', stream, id, id)[1]
if found then
  local xadd = { 'XADD', dead }
  if tonumber(ARGV[6]) > 0 then
    xadd = { 'XADD', dead, 'MAXLEN', '~', ARGV[6] }
  end
  for _, item in ipairs({ '*', 'x-dead-fields', cmsgpack.pack(found[2]), 'x-dead-reason', 'refused',
    'x-dead-error', 'Redis refused every batch holding this entry: ' .. ARGV[5],
    'x-dead-stream', stream, 'x-dead-id', id, 'x-dead-deliveries', ARGV[4] }) do
    xadd[#xadd + 1] = item
  end
  redis.call(unpack(xadd))
end
redis.call('XACK', stream, group, id)
redis.call('HDEL', held_record, id)
return 1
