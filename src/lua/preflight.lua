#!lua flags=allow-oom,no-writes
-- What the relay checks once at start, so that a setup it cannot work with stops it with the reason
-- instead of failing later on every batch: the commands its ACL user must be allowed (on its keys
-- and its channel), and the types of its keys.
--
-- KEYS[1] source stream; KEYS[2] dead-letter stream; KEYS[3] journal; KEYS[4] held record;
-- KEYS[5] leases; KEYS[6] the group's statistics, with delivery.confirm = "clients" only. ARGV[1] consumer group; ARGV[2] a broadcast channel (or the
-- streams adapter's stream); ARGV[3] the channel servers are counted on; ARGV[4] PUBLISH, SPUBLISH
-- or XADD; ARGV[5] the PUBSUB subcommand counting servers;
-- ARGV[6] '1' when the relay WAITs for replicas (redis.wait_replicas); ARGV[7] '1' when it confirms
-- batches by the servers' answers (delivery.confirm = "processed"), with ARGV[8] the channel its
-- requests go to, ARGV[9] '1' when it counts the clients entries reached (delivery.confirm =
-- "clients"), ARGV[10] and ARGV[11] how it subscribes to the answers (command, channel).
-- Returns { problems, optional }: what stops the relay, and what only degrades it.
local stream, dead, journal, held, leases, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local group, broadcast, servers = ARGV[1], ARGV[2], ARGV[3]
local publish, count = ARGV[4], ARGV[5]
local problems, optional = {}, {}

local required = {
  { 'XREADGROUP', 'GROUP', group, 'c', 'STREAMS', stream, '>' },
  { 'XGROUP', 'CREATE', stream, group, '0' },
  { 'XGROUP', 'DELCONSUMER', stream, group, 'c' },
  { 'XINFO', 'GROUPS', stream },
  { 'XINFO', 'CONSUMERS', stream, group },
  { 'XPENDING', stream, group },
  { 'XCLAIM', stream, group, 'c', '0', '0-1' },
  { 'XAUTOCLAIM', stream, group, 'c', '0', '0-0' },
  { 'XACK', stream, group, '0-1' },
  { 'XRANGE', stream, '-', '+' },
  { 'XLEN', stream },
  { 'XADD', dead, '*', 'f', 'v' },
  { 'HGET', journal, 'f' }, { 'HGETALL', journal }, { 'HSET', journal, 'f', 'v' }, { 'HDEL', journal, 'f' },
  { 'HMGET', held, 'f' }, { 'HSET', held, 'f', 'v' }, { 'HDEL', held, 'f' },
  { 'HGET', leases, 'f' }, { 'HSET', leases, 'f', 'v' }, { 'HDEL', leases, 'f' },
  publish == 'XADD' and { 'XADD', broadcast, '*', 'f', 'v' } or { publish, broadcast, 'x' },
  { 'PUBSUB', count, servers },
  { 'TYPE', stream },
  { 'TIME' },
  { 'INFO', 'server' },
  { 'EVALSHA', '0', '0' },
}
if ARGV[6] == '1' then
  required[#required + 1] = { 'WAIT', '1', '0' }
end
for _, command in ipairs(required) do
  if not redis.acl_check_cmd(unpack(command)) then
    problems[#problems + 1] = 'the ACL user may not run ' .. command[1] .. ' ' .. (command[2] or '') ..
      ' (see the ACL rule in docs/05-security.md)'
  end
end
if ARGV[9] == '1' and not redis.acl_check_cmd('HINCRBY', stats, 'reached_no_client', '1') then
  problems[#problems + 1] = 'the ACL user may not run HINCRBY ' .. stats .. ', which delivery.confirm = "clients"' ..
    ' needs to count the entries that reached no client (see the ACL rule in docs/05-security.md)'
end
if ARGV[7] == '1' then
  for _, command in ipairs({ { publish, ARGV[8], 'x' }, { ARGV[10], ARGV[11] } }) do
    if not redis.acl_check_cmd(unpack(command)) then
      problems[#problems + 1] = 'the ACL user may not run ' .. command[1] .. ' ' .. command[2] ..
        ', which delivery.confirm = "processed" needs to hear the servers say they have a batch' ..
        ' (see the ACL rule in docs/05-security.md; delivery.confirm = "published" does without)'
    end
  end
end
for _, command in ipairs({ { 'CLIENT', 'LIST' }, { 'CONFIG', 'GET', 'client-output-buffer-limit' } }) do
  if not redis.acl_check_cmd(unpack(command)) then
    optional[#optional + 1] = command[1] .. ' ' .. command[2]
  end
end
for _, key in ipairs({ { stream, 'stream', 'source.stream' }, { dead, 'stream', 'dead_letter.stream' },
  { journal, 'hash', 'the journal' }, { held, 'hash', 'the held record' }, { leases, 'hash', 'the leases' },
  { stats or leases, 'hash', 'the statistics' } }) do
  local found = redis.call('TYPE', key[1])['ok']
  if found ~= 'none' and found ~= key[2] then
    problems[#problems + 1] = key[3] .. ' key ' .. key[1] .. ' holds a ' .. found .. ', not a ' .. key[2]
  end
end
return { problems, optional }
