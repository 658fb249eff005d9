-- How an entry leaves the group, whichever script decides it (published and confirmed,
-- dead-lettered, acknowledged by its clients, published by an earlier relay): `acknowledge` is the
-- only XACK of the scripts (a test in protocol.rs checks it), so that what leaving means is said
-- once. Both functions take the items `first` to `last` of `items` (all by default) and pass at most
-- a thousand of them per command: `unpack` of more could overflow Lua's C stack.
local function call_in_chunks(head, items, first, last)
  first, last = first or 1, last or #items
  for from = first, last, 1000 do
    local call = { unpack(head) }
    for j = from, math.min(from + 999, last) do
      call[#call + 1] = items[j]
    end
    redis.call(unpack(call))
  end
end

local function acknowledge(stream, group, ids, first, last)
  first, last = first or 1, last or #ids
  -- Straight from `ids`, not copied as call_in_chunks does: this runs for every entry delivered.
  for from = first, last, 1000 do
    redis.call('XACK', stream, group, unpack(ids, from, math.min(from + 999, last)))
  end
end
