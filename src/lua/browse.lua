-- A page of dead letters, each value cut to a size a page or a terminal can show: a dead letter can
-- hold many megabytes (its entry was too large), and neither the console (in the relay) nor
-- `sio-relay dead list` may bring them all into its memory. Both read dead letters through here.
-- KEYS[1] the dead-letter stream
-- ARGV[1] ORDER_NEWEST (newest first: the console) or ORDER_OLDEST (oldest first: dead list)
-- ARGV[2] where the page starts, excluded: newest first '+' or '(<id>' for the letters before
--         <id>; oldest first '-' or '(<id>' for the letters after <id>
-- ARGV[3] at most this many letters returned
-- ARGV[4] at most this many letters scanned (those of another reason included)
-- ARGV[5], ARGV[6] only letters whose field ARGV[5] (x-dead-reason, x-dead-id) is ARGV[6]; '', '':
--         every letter
-- ARGV[7] bytes kept of each field name and value
-- ARGV[8] bytes of x-dead-fields (the packed fields) kept whole, to be unpacked; longer ones are cut
-- ARGV[9] producer fields kept per letter (the relay's x-dead-* ones are always kept)
-- Returns {letters, last scanned ID or '', letters scanned}; a letter is
-- {id, {name, value, bytes of the value, ...}, fields it had}.
local wanted, scan = tonumber(ARGV[3]), tonumber(ARGV[4])
local only_field, only_value = ARGV[5], ARGV[6]
local cut, packed_whole, max_fields = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local rows
if ARGV[1] == ORDER_OLDEST then
  rows = redis.call('XRANGE', KEYS[1], ARGV[2], '+', 'COUNT', scan)
elseif ARGV[1] == ORDER_NEWEST then
  rows = redis.call('XREVRANGE', KEYS[1], ARGV[2], '-', 'COUNT', scan)
else
  return redis.error_reply('SIORELAY BUG unknown order ' .. tostring(ARGV[1]))
end
local letters, last, scanned = {}, '', 0
for _, row in ipairs(rows) do
  if #letters >= wanted then break end
  local id, fields = row[1], row[2]
  last, scanned = id, scanned + 1
  local keep = only_field == ''
  for i = 1, #fields, 2 do
    if fields[i] == only_field then
      keep = fields[i + 1] == only_value
      break
    end
  end
  if keep then
    local shown, producers = {}, 0
    for i = 1, #fields, 2 do
      local name, value = fields[i], fields[i + 1]
      local relays = string.sub(name, 1, #DEAD_PREFIX) == DEAD_PREFIX
      if not relays then producers = producers + 1 end
      if relays or producers <= max_fields then
        local limit = cut
        if name == DEAD_PACKED and #value <= packed_whole then limit = #value end
        shown[#shown + 1] = string.sub(name, 1, cut)
        shown[#shown + 1] = string.sub(value, 1, limit)
        shown[#shown + 1] = #value
      end
    end
    letters[#letters + 1] = {id, shown, #fields / 2}
  end
end
return {letters, last, scanned}
