#!lua flags=allow-oom
-- Records what the relay decided about entries it published (see confirming.rs): acknowledges those
-- delivered, and takes every decided entry out of this consumer's journal field, the delivered and
-- those to be published again alike (a journaled entry found pending is taken as published in this
-- Redis process and acknowledged without a publish, so one left there would never go out again).
-- allow-oom: acknowledging only frees memory, and must not wait while Redis is full. What could
-- fail (ACL, key type) is checked first, so a refused confirmation has no effect.
--
-- KEYS[1] source stream; KEYS[2] journal
-- ARGV[1] consumer group; ARGV[2] this consumer; ARGV[3] n; then the n IDs delivered; then the IDs
-- to be published again.
local stream, journal = KEYS[1], KEYS[2]
local group, consumer = ARGV[1], ARGV[2]
local delivered = tonumber(ARGV[3])

for _, command in ipairs({ { 'XACK', stream, group, '0-1' }, { 'HSET', journal, consumer, 'v' },
  { 'HDEL', journal, consumer } }) do
  if not redis.acl_check_cmd(unpack(command)) then
    return redis.error_reply('SIORELAY NOPERM the ACL user may not run ' .. command[1] .. ' on ' .. command[2])
  end
end
local journal_type = redis.call('TYPE', journal)['ok']
if journal_type ~= 'none' and journal_type ~= 'hash' then
  return redis.error_reply('SIORELAY WRONGTYPE the journal key ' .. journal .. ' holds a ' .. journal_type .. ', not a hash')
end

for first = 4, 3 + delivered, 1000 do
  redis.call('XACK', stream, group, unpack(ARGV, first, math.min(first + 999, 3 + delivered)))
end
local recorded = redis.call('HGET', journal, consumer)
if recorded then
  local decided = {}
  for j = 4, #ARGV do
    decided[ARGV[j]] = true
  end
  local space = string.find(recorded, ' ', 1, true) or #recorded
  local kept = {}
  for id in string.gmatch(string.sub(recorded, space + 1), '[^,]+') do
    if not decided[id] then
      kept[#kept + 1] = id
    end
  end
  if #kept == 0 then
    redis.call('HDEL', journal, consumer)
  else
    redis.call('HSET', journal, consumer, string.sub(recorded, 1, space) .. table.concat(kept, ','))
  end
end
return redis.status_reply('OK')
