#!lua
-- Records that clients acknowledged an entry: writes its result to the results stream and
-- acknowledges it in the group, in one step (`settle.lua`), so that a result exists exactly when
-- the entry is no longer pending.
--
-- KEYS[1] source stream; KEYS[2] results stream; KEYS[3] held record
-- ARGV[1] consumer group; ARGV[2] this consumer; ARGV[3] entry ID; ARGV[4] results MAXLEN ~ (0:
-- none); ARGV[5..] the result's field names and values.
-- Returns 1 when done, 0 when the entry is no longer pending for this consumer (another relay took
-- it, or it was acknowledged elsewhere): then nothing is written.
local stream, results, held_record = KEYS[1], KEYS[2], KEYS[3]
return settle(stream, ARGV[1], ARGV[2], ARGV[3], held_record, results, 'results stream', ARGV[4],
  function()
    return { unpack(ARGV, 5) }
  end)
