-- The console's page of dead letters, newest first, each value cut to a size the page can show: a
-- dead letter can hold many megabytes (its entry was too large), and a page must not bring them
-- all into the relay's memory.
-- KEYS[1] the dead-letter stream
-- ARGV[1] the end of the range ('+', or '(<id>' for the letters before <id>)
-- ARGV[2] at most this many letters returned
-- ARGV[3] at most this many letters scanned (those of another reason included)
-- ARGV[4] only letters with this x-dead-reason ('' = any)
-- ARGV[5] bytes kept of each field name and value
-- ARGV[6] bytes of x-dead-fields (the packed fields) kept whole, to be unpacked; longer ones are cut
-- ARGV[7] producer fields kept per letter (the relay's x-dead-* ones are always kept)
-- Returns {letters, last scanned ID or '', letters scanned}; a letter is
-- {id, {name, value, bytes of the value, ...}, fields it had}.
local wanted, scan = tonumber(ARGV[2]), tonumber(ARGV[3])
local cut, packed_whole, max_fields = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local rows = redis.call('XREVRANGE', KEYS[1], ARGV[1], '-', 'COUNT', scan)
local letters, last, scanned = {}, '', 0
for _, row in ipairs(rows) do
  if #letters >= wanted then break end
  local id, fields = row[1], row[2]
  last, scanned = id, scanned + 1
  local keep = ARGV[4] == ''
  for i = 1, #fields, 2 do
    if fields[i] == 'x-dead-reason' then
      keep = keep or fields[i + 1] == ARGV[4]
      break
    end
  end
  if keep then
    local shown, producers = {}, 0
    for i = 1, #fields, 2 do
      local name, value = fields[i], fields[i + 1]
      local relays = string.sub(name, 1, 7) == 'x-dead-'
      if not relays then producers = producers + 1 end
      if relays or producers <= max_fields then
        local limit = cut
        if name == 'x-dead-fields' and #value <= packed_whole then limit = #value end
        shown[#shown + 1] = string.sub(name, 1, cut)
        shown[#shown + 1] = string.sub(value, 1, limit)
        shown[#shown + 1] = #value
      end
    end
    letters[#letters + 1] = {id, shown, #fields / 2}
  end
end
return {letters, last, scanned}
