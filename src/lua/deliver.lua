-- Publishes, dead-letters and acknowledges one batch of stream entries, atomically.
--
-- Redis runs a script as one step: if the relay dies at any moment, either the whole batch was
-- published and acknowledged or none of it was, so a restart neither loses nor repeats a packet.
--
-- KEYS[1]  source stream          ARGV[1]  consumer group       ARGV[3]  min receivers
-- KEYS[2]  dead-letter stream     ARGV[2]  this consumer        ARGV[4]  dead-letter MAXLEN ~ (0: none)
-- ARGV[5..] operations, each opening with its kind:
--   'P', id, namespace, channel, payload      publish; acknowledge if it reached min receivers
--   'D', id, n, field1, value1, ... (n items)  append to the dead-letter stream and acknowledge
--
-- Returns one integer per operation:
--   >= 0  receivers of the PUBLISH; the entry was acknowledged iff this is >= min receivers
--   -1    skipped: the entry is no longer pending for this consumer (another relay reclaimed it,
--         or it was acknowledged already), so publishing it here would duplicate it
--   -2    not published: an earlier entry of the same namespace in this batch found too few
--         receivers, and entries of a namespace are delivered in stream order
--   -3    dead-lettered
local stream, dead = KEYS[1], KEYS[2]
local group, consumer = ARGV[1], ARGV[2]
local min_receivers = tonumber(ARGV[3])
local dead_max_len = tonumber(ARGV[4])

local function owned(id)
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  return pending[1] ~= nil and pending[1][2] == consumer
end

local results, acked, held = {}, {}, {}
local i = 5
while i <= #ARGV do
  local kind, id = ARGV[i], ARGV[i + 1]
  if kind == 'P' then
    local namespace, channel, payload = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    i = i + 5
    if held[namespace] then
      results[#results + 1] = -2
    elseif not owned(id) then
      results[#results + 1] = -1
    else
      local receivers = redis.call('PUBLISH', channel, payload)
      if receivers >= min_receivers then
        acked[#acked + 1] = id
      else
        held[namespace] = true
      end
      results[#results + 1] = receivers
    end
  elseif kind == 'D' then
    local n = tonumber(ARGV[i + 2])
    if owned(id) then
      local xadd = { 'XADD', dead }
      if dead_max_len > 0 then
        xadd[#xadd + 1] = 'MAXLEN'
        xadd[#xadd + 1] = '~'
        xadd[#xadd + 1] = dead_max_len
      end
      xadd[#xadd + 1] = '*'
      for j = i + 3, i + 2 + n do
        xadd[#xadd + 1] = ARGV[j]
      end
      redis.call(unpack(xadd))
      acked[#acked + 1] = id
      results[#results + 1] = -3
    else
      results[#results + 1] = -1
    end
    i = i + 3 + n
  else
    return redis.error_reply('sio-relay deliver script: unknown operation ' .. tostring(kind))
  end
end

if #acked > 0 then
  redis.call('XACK', stream, group, unpack(acked))
end
return results
