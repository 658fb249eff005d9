#!lua flags=allow-oom
-- Records what the relay decided about entries it published (see confirming.rs): acknowledges those
-- delivered, and takes decided entries out of the journal. The journal holds one field per delivery
-- script call; a call whose entries are all decided loses its field whole. An entry to be published
-- again leaves the journal at once, so a call still partly undecided keeps its field without it (a
-- journaled entry found pending is taken as published in this Redis process and acknowledged
-- without a publish: one left there would never go out again).
-- allow-oom: acknowledging only frees memory, and must not wait while Redis is full. What could
-- fail (ACL, key type) is checked first, so a refused confirmation has no effect.
--
-- KEYS[1] source stream; KEYS[2] journal; KEYS[3] the group's statistics (a hash), given only when
-- something is to be counted there
-- ARGV[1] consumer group; ARGV[2] how many of the delivered entries reached no client, added to the
-- statistics' `reached_no_client`; ARGV[3..6] how servers are counted (servers.lua: PUBSUB
-- subcommand, channel prefix, '1' for a channel per namespace, monitor channel prefix); ARGV[7] c;
-- then the c namespaces whose servers to count (for the relay's next decisions: one round trip for
-- both); ARGV[8 + c] n, ARGV[9 + c] f, ARGV[10 + c] r; then the n IDs delivered, the f journal
-- fields to drop, the r journal fields to take the rest out of: the IDs to be published again.
-- Returns the servers counted, one per namespace asked.
local stream, journal, stats = KEYS[1], KEYS[2], KEYS[3]
local group = ARGV[1]
local reached_no_client = tonumber(ARGV[2])
local servers_command, servers_prefix, per_namespace, monitor_prefix = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local c = tonumber(ARGV[7])
local n, f, r = tonumber(ARGV[8 + c]), tonumber(ARGV[9 + c]), tonumber(ARGV[10 + c])
local FIRST_ID = 11 + c
local FIRST_DROP = FIRST_ID + n
local FIRST_REWRITE = FIRST_DROP + f
local FIRST_AGAIN = FIRST_REWRITE + r

local needs = { { 'XACK', stream, group, '0-1' }, { 'HDEL', journal, 'f' }, { 'HSET', journal, 'f', 'v' },
  { 'PUBSUB', servers_command, servers_prefix } }
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

acknowledge(stream, group, ARGV, FIRST_ID, FIRST_DROP - 1)
if reached_no_client > 0 then
  redis.call('HINCRBY', stats, 'reached_no_client', reached_no_client)
end
call_in_chunks({ 'HDEL', journal }, ARGV, FIRST_DROP, FIRST_REWRITE - 1)
if r > 0 then
  local again = {}
  for j = FIRST_AGAIN, #ARGV do
    again[ARGV[j]] = true
  end
  for j = FIRST_REWRITE, FIRST_AGAIN - 1 do
    local recorded = redis.call('HGET', journal, ARGV[j])
    if recorded then
      local space = string.find(recorded, ' ', 1, true) or #recorded
      local kept = {}
      for id in string.gmatch(string.sub(recorded, space + 1), '[^,]+') do
        if not again[id] then
          kept[#kept + 1] = id
        end
      end
      if #kept == 0 then
        redis.call('HDEL', journal, ARGV[j])
      else
        redis.call('HSET', journal, ARGV[j], string.sub(recorded, 1, space) .. table.concat(kept, ','))
      end
    end
  end
end
local counts = {}
for j = 8, 7 + c do
  counts[#counts + 1] = count_servers(servers_command, servers_prefix, per_namespace, monitor_prefix, ARGV[j])
end
return counts
