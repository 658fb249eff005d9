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
return settle(stream, group, consumer, id, held_record, dead, 'dead-letter stream', ARGV[6], function()
  local found = redis.call('XRANGE', stream, id, id)[1]
  if not found then
    return nil
  end
  return { DEAD_PACKED, cmsgpack.pack(found[2]), DEAD_REASON, REASON_REFUSED,
    DEAD_ERROR, 'Redis refused every batch holding this entry: ' .. ARGV[5],
    DEAD_STREAM, stream, DEAD_ID, id, DEAD_DELIVERIES, ARGV[4] }
end)
