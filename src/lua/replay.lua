-- Moves dead letters back to the source stream, each atomically with its removal from the
-- dead-letter stream. Its fields go back as they are (the relay ignores the x-dead-* ones); fields a
-- dead letter keeps packed in x-dead-fields are unpacked, unless there are more than one Redis call
-- from a script can carry: such a dead letter is left in place and reported.
--
-- KEYS[1] dead-letter stream; KEYS[2] source stream; ARGV dead-letter IDs.
-- Returns { moved, skipped }: flat pairs of dead-letter ID and new source entry ID, and of
-- dead-letter ID and why it was not moved. IDs not found are left out.
local moved, skipped = {}, {}
for i = 1, #ARGV do
  local entry = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])[1]
  if entry then
    local fields, packed = {}, nil
    for j = 1, #entry[2], 2 do
      if entry[2][j] == DEAD_PACKED then
        packed = cmsgpack.unpack(entry[2][j + 1])
      else
        fields[#fields + 1] = entry[2][j]
        fields[#fields + 1] = entry[2][j + 1]
      end
    end
    if packed then
      for j = #packed, 1, -1 do
        table.insert(fields, 1, packed[j])
      end
    end
    if #fields > MAX_XADD_VALUES then
      skipped[#skipped + 1] = ARGV[i]
      skipped[#skipped + 1] = (#fields / 2) .. ' fields, more than a replay can carry'
    else
      local id = redis.call('XADD', KEYS[2], '*', unpack(fields))
      redis.call('XDEL', KEYS[1], ARGV[i])
      moved[#moved + 1] = ARGV[i]
      moved[#moved + 1] = id
    end
  end
end
return { moved, skipped }
