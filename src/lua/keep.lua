#!lua flags=allow-oom
-- Resets the idle time of entries this relay holds, so that no other relay reclaims entries that
-- are only waiting for a Socket.IO server to listen. One scan of this consumer's pending entries
-- over the IDs' range finds which are still its own, and one XCLAIM JUSTID touches them: the cost
-- is a few commands per call, whatever the number of entries or namespaces. JUSTID leaves their
-- delivery counter alone: waiting is not a failed delivery. allow-oom: it only touches entries.
--
-- KEYS[1] source stream; KEYS[2] held record; ARGV[1] consumer group; ARGV[2] this consumer;
-- ARGV[3..] entry IDs in ascending order (at most a thousand).
-- Returns { lost, deleted }: the IDs no longer pending for this consumer, and those deleted from
-- the stream (trimmed, XDEL), which XCLAIM drops from the pending list. The relay forgets both.
-- Entries no longer pending at all leave the held record too; those another relay reclaimed keep
-- their record, for that relay to honour.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local first, last = ARGV[3], ARGV[#ARGV]
local ours = {}
local start = first
while true do
  local page = redis.call('XPENDING', stream, group, start, last, 1000, consumer)
  for _, entry in ipairs(page) do
    ours[entry[1]] = true
  end
  if #page < 1000 then
    break
  end
  start = '(' .. page[#page][1]
end
local mine, lost = { 'XCLAIM', stream, group, consumer, 0 }, {}
for i = 3, #ARGV do
  if ours[ARGV[i]] then
    mine[#mine + 1] = ARGV[i]
  else
    lost[#lost + 1] = ARGV[i]
  end
end
local deleted = {}
if #mine > 5 then
  mine[#mine + 1] = 'JUSTID'
  local kept = {}
  for _, id in ipairs(redis.call(unpack(mine))) do
    kept[id] = true
  end
  for i = 6, #mine - 1 do
    if not kept[mine[i]] then
      deleted[#deleted + 1] = mine[i]
      redis.call('HDEL', KEYS[2], mine[i])
    end
  end
end
for _, id in ipairs(lost) do
  if redis.call('XPENDING', stream, group, id, id, 1)[1] == nil then
    redis.call('HDEL', KEYS[2], id)
  end
end
return { lost, deleted }
