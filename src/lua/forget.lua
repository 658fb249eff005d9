-- Removes consumers of the group that have been idle for longer than a threshold and have
-- nothing pending. XGROUP DELCONSUMER destroys a consumer's pending entries, so the check and the
-- removal must be one step: a consumer that got an entry in between is kept.
--
-- KEYS[1] source stream; KEYS[2] journal; KEYS[3] leases; ARGV[1] consumer group; ARGV[2] this
-- consumer (never removed); ARGV[3] minimum idle time in milliseconds. Returns the names removed. A
-- removed consumer's journal fields (`<name>:...`, and `<name>` as relays before wrote it) and lease
-- go too: with nothing pending, nothing in them matters (a relay still running under that name
-- renews its lease within a second).
local removed = {}
local fields = nil
local function drop_journal(name)
  if fields == nil then
    fields = redis.call('HGETALL', KEYS[2])
  end
  local prefix = name .. ':'
  for i = 1, #fields, 2 do
    local field = fields[i]
    if field == name or string.sub(field, 1, #prefix) == prefix then
      redis.call('HDEL', KEYS[2], field)
    end
  end
end
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, pending, idle
  for i = 1, #consumer, 2 do
    local key = consumer[i]
    if key == 'name' then
      name = consumer[i + 1]
    elseif key == 'pending' then
      pending = consumer[i + 1]
    elseif key == 'idle' then
      idle = consumer[i + 1]
    end
  end
  if name ~= ARGV[2] and pending == 0 and idle > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    drop_journal(name)
    redis.call('HDEL', KEYS[3], name)
    removed[#removed + 1] = name
  end
end
return removed
