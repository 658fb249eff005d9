#!lua
-- Drops this consumer's journal fields of earlier sessions: a relay that died, or lost its link to
-- Redis, left the fields of the batches it had not confirmed. Once the relay of a new session has
-- taken back its own pending entries (those fields told it which were published already), they
-- tell nothing more, and would only grow the hash every redelivery reads.
--
-- KEYS[1] journal; ARGV[1] this consumer; ARGV[2] the start of this session's field names.
-- Returns how many fields were dropped.
local journal, consumer, current = KEYS[1], ARGV[1], ARGV[2]
local prefix = consumer .. ':'
local fields = redis.call('HGETALL', journal)
local dropped = 0
for i = 1, #fields, 2 do
  local field = fields[i]
  local mine = field == consumer or string.sub(field, 1, #prefix) == prefix
  if mine and string.sub(field, 1, #current) ~= current then
    redis.call('HDEL', journal, field)
    dropped = dropped + 1
  end
end
return dropped
