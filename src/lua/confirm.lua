#!lua flags=allow-oom
-- Confirms what the delivery scripts published since the last confirmation: acknowledges each
-- entry whose namespace still has enough of the Socket.IO servers that were counted when it was
-- published, and clears this consumer's journal field.
--
-- The relay sends it after the delivery scripts' replies, so Redis has written their packets to the
-- servers' sockets by now, or dropped a server whose output buffer overflowed (client-output-
-- buffer-limit pubsub) together with its packets. A server that vanished in between may never have
-- had them: when fewer than min receivers of the servers counted at publishing are left, the
-- namespace's entries are not acknowledged but returned, to be published again once enough
-- servers listen (their journal field is cleared too, so they are not mistaken for delivered). A
-- server that joins in the same instant another leaves can mask it; nothing finer is visible.
-- allow-oom: acknowledging only frees memory, and must not wait while Redis is full. What could
-- fail (ACL, key type) is checked first, so a refused confirmation has no effect.
--
-- KEYS[1] source stream; KEYS[2] journal
-- ARGV[1] consumer group; ARGV[2] this consumer; ARGV[3] min receivers; ARGV[4] PUBSUB subcommand
-- counting servers; ARGV[5] servers channel prefix; ARGV[6] monitor channel prefix (servers.lua);
-- then per namespace: namespace, servers counted at publishing, servers the relay counted now (-1:
-- count them here; in a cluster the relay counts every node), number of entry IDs n, the n IDs.
-- Returns the IDs not confirmed.
local stream, journal = KEYS[1], KEYS[2]
local group, consumer = ARGV[1], ARGV[2]
local min_receivers = tonumber(ARGV[3])
local servers_command, servers_prefix, monitor_prefix = ARGV[4], ARGV[5], ARGV[6]

for _, command in ipairs({ { 'XACK', stream, group, '0-1' }, { 'HDEL', journal, consumer } }) do
  if not redis.acl_check_cmd(unpack(command)) then
    return redis.error_reply('SIORELAY NOPERM the ACL user may not run ' .. command[1] .. ' on ' .. command[2])
  end
end
local journal_type = redis.call('TYPE', journal)['ok']
if journal_type ~= 'none' and journal_type ~= 'hash' then
  return redis.error_reply('SIORELAY WRONGTYPE the journal key ' .. journal .. ' holds a ' .. journal_type .. ', not a hash')
end

local confirmed, unconfirmed = {}, {}
local i = 7
while i <= #ARGV do
  local namespace, counted = ARGV[i], tonumber(ARGV[i + 1])
  local now, n = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local still = counted
  if min_receivers > 0 then
    if now < 0 then
      now = count_servers(servers_command, servers_prefix, monitor_prefix, namespace)
    end
    still = math.min(counted, now)
  end
  local into = (still >= min_receivers) and confirmed or unconfirmed
  for j = i + 4, i + 3 + n do
    into[#into + 1] = ARGV[j]
  end
  i = i + 4 + n
end
for first = 1, #confirmed, 1000 do
  redis.call('XACK', stream, group, unpack(confirmed, first, math.min(first + 999, #confirmed)))
end
redis.call('HDEL', journal, consumer)
return unconfirmed
