-- Publishes, dead-letters and acknowledges one batch of stream entries, atomically.
--
-- Redis runs a script as one step, so if the relay dies at any moment either the whole batch was
-- published or none of it was. A published entry is not acknowledged here but written to the
-- journal (a hash: consumer -> "<run_id of this Redis process> <id>,<id>,..."); the relay
-- acknowledges it and clears its journal field with its next command, which Redis only reads after
-- it has written this batch's packets to the servers' sockets.
-- Anyone who later finds the entry still pending:
--   * journal holds the current run_id: it was published and flushed by this very Redis process,
--     so it is acknowledged without publishing again (a relay crash never duplicates);
--   * journal holds another run_id: Redis restarted in between and the packets may never have left
--     it, so the entry is published again (a Redis crash never loses).
--
-- KEYS[1] source stream     ARGV[1] consumer group    ARGV[4] dead-letter MAXLEN ~ (0: none)
-- KEYS[2] dead-letter stream ARGV[2] this consumer    ARGV[5] run_id of this Redis process
-- KEYS[3] journal            ARGV[3] min receivers    ARGV[6], ARGV[7] lowest and highest entry ID
--                                                     ARGV[8] how many pending entries to scan
-- ARGV[9..] operations, each opening with its kind:
--   'P', id, namespace, channel, payload      publish a first delivery; journal it if it reached
--                                             min receivers
--   'R', id, namespace, channel, payload      the same for a redelivery, which may be journaled
--   'D', id, n, field1, value1, ... (n items)  append to the dead-letter stream and acknowledge
--
-- Returns one integer per operation:
--   >= 0  receivers of the PUBLISH; the entry was journaled iff this is >= min receivers
--   -1    skipped: the entry is no longer pending for this consumer (another relay reclaimed it,
--         or it was acknowledged already), so publishing it here would duplicate it
--   -2    not published: an earlier entry of the same namespace in this batch found too few
--         receivers, and entries of a namespace are delivered in stream order
--   -3    dead-lettered (and acknowledged)
--   -4    already published by this Redis process: acknowledged without publishing (or
--         dead-lettering) it again
local stream, dead, journal = KEYS[1], KEYS[2], KEYS[3]
local group, consumer = ARGV[1], ARGV[2]
local min_receivers = tonumber(ARGV[3])
local dead_max_len = tonumber(ARGV[4])
local run_id = ARGV[5]

-- This consumer's pending entries in the batch's range, in one scan. If the scan was cut short by
-- its count, an entry missing from it is looked up on its own.
local mine = {}
local scan = tonumber(ARGV[8])
local pending = redis.call('XPENDING', stream, group, ARGV[6], ARGV[7], scan, consumer)
for _, entry in ipairs(pending) do
  mine[entry[1]] = true
end
local complete = #pending < scan

local function owned(id)
  if mine[id] or complete then
    return mine[id] == true
  end
  local one = redis.call('XPENDING', stream, group, id, id, 1)
  return one[1] ~= nil and one[1][2] == consumer
end

-- The entries some consumer published in this Redis process and has not confirmed yet. Only
-- redeliveries need it (a first delivery cannot have been published), so it is read lazily.
local journaled = nil
local function was_published(id)
  if journaled == nil then
    journaled = {}
    local fields = redis.call('HGETALL', journal)
    for j = 2, #fields, 2 do
      local value = fields[j]
      local space = string.find(value, ' ', 1, true)
      if space and string.sub(value, 1, space - 1) == run_id then
        for published_id in string.gmatch(string.sub(value, space + 1), '[^,]+') do
          journaled[published_id] = true
        end
      end
    end
  end
  return journaled[id] == true
end

local results, acked, published, held = {}, {}, {}, {}
local i = 9
while i <= #ARGV do
  local kind, id = ARGV[i], ARGV[i + 1]
  if kind == 'P' or kind == 'R' then
    local namespace, channel, payload = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    i = i + 5
    if held[namespace] then
      results[#results + 1] = -2
    elseif not owned(id) then
      results[#results + 1] = -1
    elseif kind == 'R' and was_published(id) then
      acked[#acked + 1] = id
      results[#results + 1] = -4
    else
      local receivers = redis.call('PUBLISH', channel, payload)
      if receivers >= min_receivers then
        published[#published + 1] = id
      else
        held[namespace] = true
      end
      results[#results + 1] = receivers
    end
  elseif kind == 'D' then
    local n = tonumber(ARGV[i + 2])
    if not owned(id) then
      results[#results + 1] = -1
    elseif was_published(id) then
      -- Published already (it expired or ran out of attempts only while awaiting confirmation).
      acked[#acked + 1] = id
      results[#results + 1] = -4
    else
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
    end
    i = i + 3 + n
  else
    return redis.error_reply('sio-relay deliver script: unknown operation ' .. tostring(kind))
  end
end

if #acked > 0 then
  redis.call('XACK', stream, group, unpack(acked))
end
if #published > 0 then
  -- Appended to what this consumer published earlier in this Redis process and has not confirmed.
  local ids = table.concat(published, ',')
  local earlier = redis.call('HGET', journal, consumer)
  if earlier and string.sub(earlier, 1, #run_id + 1) == run_id .. ' ' then
    redis.call('HSET', journal, consumer, earlier .. ',' .. ids)
  else
    redis.call('HSET', journal, consumer, run_id .. ' ' .. ids)
  end
end
return results
