#!lua
-- Records that clients acknowledged an entry: writes its result to the results stream and
-- acknowledges it in the group, in one step, so that a result exists exactly when the entry is no
-- longer pending. It checks what could fail before acting, as the delivery script does: a script
-- stops at the first failing command, and an XADD done without its XACK would write the result
-- again when the entry is sent again.
--
-- KEYS[1] source stream; KEYS[2] results stream; KEYS[3] held record
-- ARGV[1] consumer group; ARGV[2] this consumer; ARGV[3] entry ID; ARGV[4] results MAXLEN ~ (0:
-- none); ARGV[5..] the result's field names and values.
-- Returns 1 when done, 0 when the entry is no longer pending for this consumer (another relay took
-- it, or it was acknowledged elsewhere): then nothing is written.
local stream, results, held_record = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, id, max_len = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local results_type = redis.call('TYPE', results)['ok']
if results_type ~= 'none' and results_type ~= 'stream' then
  return redis.error_reply('SIORELAY WRONGTYPE the results stream key ' .. results .. ' holds a ' .. results_type)
end
for _, command in ipairs({ { 'XADD', results, '*', 'f', 'v' }, { 'XACK', stream, group, id },
  { 'HDEL', held_record, id } }) do
  if not redis.acl_check_cmd(unpack(command)) then
    return redis.error_reply('SIORELAY NOPERM the ACL user may not run ' .. command[1] .. ' on ' .. command[2])
  end
end
local pending = redis.call('XPENDING', stream, group, id, id, 1)
if pending[1] == nil or pending[1][2] ~= consumer then
  return 0
end
local add = { 'XADD', results }
if max_len > 0 then
  add[#add + 1] = 'MAXLEN'
  add[#add + 1] = '~'
  add[#add + 1] = max_len
end
add[#add + 1] = '*'
for i = 5, #ARGV do
  add[#add + 1] = ARGV[i]
end
redis.call(unpack(add))
redis.call('XACK', stream, group, id)
redis.call('HDEL', held_record, id)
return 1
