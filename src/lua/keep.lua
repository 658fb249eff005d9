-- Resets the idle time of entries this relay still holds, so that no other relay reclaims entries
-- that are only waiting for a Socket.IO server to listen. JUSTID leaves their delivery counter
-- alone: waiting is not a failed delivery.
--
-- KEYS[1] source stream; ARGV[1] consumer group; ARGV[2] this consumer; ARGV[3..] entry IDs.
-- Returns the IDs that are no longer pending for this consumer: the relay must forget them.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local mine, lost = {}, {}
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', stream, group, ARGV[i], ARGV[i], 1)
  if pending[1] ~= nil and pending[1][2] == consumer then
    mine[#mine + 1] = ARGV[i]
  else
    lost[#lost + 1] = ARGV[i]
  end
end
if #mine > 0 then
  local xclaim = { 'XCLAIM', stream, group, consumer, 0 }
  for _, id in ipairs(mine) do
    xclaim[#xclaim + 1] = id
  end
  xclaim[#xclaim + 1] = 'JUSTID'
  redis.call(unpack(xclaim))
end
return lost
