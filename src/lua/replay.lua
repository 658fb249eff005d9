-- Moves dead letters back to the source stream, each atomically with its removal from the
-- dead-letter stream. Its fields go back as they are: the relay ignores the x-dead-* ones.
--
-- KEYS[1] dead-letter stream; KEYS[2] source stream; ARGV dead-letter IDs.
-- Returns flat pairs: dead-letter ID, new source entry ID (IDs not found are left out).
local moved = {}
for i = 1, #ARGV do
  local entry = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])[1]
  if entry then
    local id = redis.call('XADD', KEYS[2], '*', unpack(entry[2]))
    redis.call('XDEL', KEYS[1], ARGV[i])
    moved[#moved + 1] = ARGV[i]
    moved[#moved + 1] = id
  end
end
return moved
