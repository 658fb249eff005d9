#!lua flags=allow-oom
-- Records what the relay decided about entries it published (see confirming.rs): acknowledges those
-- delivered, and takes every decided entry out of this consumer's journal field, the delivered and
-- those to be published again alike (a journaled entry found pending is taken as published in this
-- Redis process and acknowledged without a publish, so one left there would never go out again).
-- allow-oom: acknowledging only frees memory, and must not wait while Redis is full. What could
-- fail (ACL, key type) is checked first, so a refused confirmation has no effect.
--
-- KEYS[1] source stream; KEYS[2] journal; KEYS[3] the group's statistics (a hash), given only when
-- something is to be counted there
-- ARGV[1] consumer group; ARGV[2] this consumer; ARGV[3] how many of the delivered entries reached no
-- client, added to the statistics' `reached_no_client`; ARGV[4] n; then the n IDs delivered; then the
-- IDs to be published again.
local stream, journal, stats = KEYS[1], KEYS[2], KEYS[3]
local group, consumer = ARGV[1], ARGV[2]
local reached_no_client = tonumber(ARGV[3])
local delivered = tonumber(ARGV[4])
local FIRST = 5

local needs = { { 'XACK', stream, group, '0-1' }, { 'HSET', journal, consumer, 'v' },
  { 'HDEL', journal, consumer } }
if reached_no_client > 0 then
  needs[#needs + 1] = { 'HINCRBY', stats, 'reached_no_client', '1' }
end
for _, command in ipairs(needs) do
  if not redis.acl_check_cmd(unpack(command)) then
    return redis.error_reply('SIORELAY NOPERM the ACL user may not run ' .. command[1] .. ' on ' .. command[2])
  end
end
for _, key in ipairs({ { journal, 'journal' }, { stats or journal, 'statistics' } }) do
  local found = redis.call('TYPE', key[1])['ok']
  if found ~= 'none' and found ~= 'hash' then
    return redis.error_reply('SIORELAY WRONGTYPE the ' .. key[2] .. ' key ' .. key[1] .. ' holds a ' .. found .. ', not a hash')
  end
end

local last = FIRST + delivered - 1
for first = FIRST, last, 1000 do
  redis.call('XACK', stream, group, unpack(ARGV, first, math.min(first + 999, last)))
end
if reached_no_client > 0 then
  redis.call('HINCRBY', stats, 'reached_no_client', reached_no_client)
end
local recorded = redis.call('HGET', journal, consumer)
if recorded then
  local decided = {}
  for j = FIRST, #ARGV do
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
