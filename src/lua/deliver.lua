#!lua
-- Publishes, holds, dead-letters and acknowledges one batch of stream entries, all or nothing.
--
-- All or nothing: the shebang makes Redis refuse the whole script while it is out of memory, and
-- every other way a command could fail (a key of the wrong type, a command the ACL user may not
-- run) is checked first, before any effect. Once the first PUBLISH went out nothing can fail, so a
-- batch Redis refuses has had no effect at all and can be retried or split without duplicates. The
-- one exception is PUBLISH itself, run with pcall: a channel the ACL forbids only holds that entry.
--
-- Servers are counted the way their adapter counts them (see servers.lua), before publishing: an
-- entry goes out only when enough servers listen, so monitors and other pattern subscribers never
-- count, and an entry is never published to servers that would see it again later. PUBLISH's own
-- count is a second check where it counts every server (not in a cluster, where it is one node's;
-- not on a sharded room channel, which only the servers holding the room subscribe to). In a
-- cluster the relay counts the servers of every node itself and passes the counts in, since a
-- script sees one node only.
--
-- A published entry is not acknowledged here but written to the journal (a hash, one field per
-- delivery script call that published anything: "<consumer>:<call>" -> "<run_id of this Redis
-- process> <id>,<id>,..."); the relay's confirmation script acknowledges it
-- once Redis has written this batch's packets to the servers' sockets. Anyone who later finds a
-- journaled entry still pending acknowledges it without publishing again if the journal holds the
-- current run_id, and publishes it again if Redis restarted in between (the packets may never have
-- left). Entries held because too few servers listen are recorded in the held hash (id -> delivery
-- count) so that waiting never spends delivery attempts, across restarts and relays. An entry whose
-- channel another node of a cluster serves (FLAG_EXTERNAL) is checked, counted and held here like
-- any other, but published by the relay after the script (OUTCOME_TO_PUBLISH), unjournaled: if the
-- relay dies before it confirms, the entry is published again (at least once, never lost).
--
-- KEYS[1] source stream      ARGV[1] consumer group       ARGV[6], ARGV[7] lowest and highest ID
-- KEYS[2] dead-letter stream ARGV[2] this consumer        ARGV[8] how many pending entries to scan
-- KEYS[3] journal            ARGV[3] min receivers        ARGV[9] PUBSUB subcommand counting servers
-- KEYS[4] held record        ARGV[4] dead-letter MAXLEN ~ (0: none)   ARGV[10] servers channel prefix
--                            ARGV[5] run_id of this Redis process     ARGV[11] monitor channel prefix
-- ARGV[12] PUBLISH or SPUBLISH; ARGV[13] '1' when its reply counts every listening server;
-- ARGV[14] the journal field this call writes, if it publishes anything; ARGV[15] '1' when each
-- namespace has a servers channel of its own, else the prefix is the channel (servers.lua);
-- ARGV[16] n, the number of namespaces whose servers the relay counted; then n pairs namespace,
-- servers; then c, the number of confirmation requests, and c triples namespace, channel, payload:
-- the request published after the batch's entries of that namespace, if any was published (see
-- confirming.rs); then the operations, each opening with its kind and OP_SIZE[kind] arguments long
-- in all (the OP_*, FLAG_* and OUTCOME_* constants come from src/protocol.rs):
--   OP_NEW, id, namespace, channel, payload      publish a new entry: first read, delivery count 1
--   OP_PUBLISH, flags, id, deliveries, namespace, channel, payload   publish any other entry
--   OP_DEAD_LETTER, flags, id, deliveries, reason, detail   dead-letter (fields copied here)
--   OP_GONE, flags, id, deliveries               deleted from the stream: acknowledge
--   OP_ATTEMPT, flags, id, deliveries, namespace, channel, payload   send an attempt of an entry
--                                                that waits for its clients' acknowledgements (a
--                                                broadcast with acknowledgements): never held,
--                                                journaled nor acknowledged here, but sent only while
--                                                the entry is still this consumer's, so that a relay
--                                                that was frozen or lost it never sends it again
-- flags, letters: FLAG_REDELIVERY a redelivery, which may have been journaled; FLAG_RECORDED
-- recorded in the held hash; FLAG_BEHIND behind an older entry the relay holds for its namespace,
-- so to be held unpublished; FLAG_EXTERNAL published by the relay (OUTCOME_TO_PUBLISH); '-' none.
--
-- Returns { results, servers, errors, confirming }: one integer per operation, OUTCOME_BASE * value
-- + code; servers, a flat list of namespace, server count for every namespace counted; errors, a
-- flat list of operation number, error text for OUTCOME_PUBLISH_REFUSED; confirming, the namespaces
-- whose confirmation request went out.
--   OUTCOME_PUBLISHED, value receivers   published and journaled
--   OUTCOME_TOO_FEW_SERVERS, value servers   not published: too few servers listen on its
--                             namespace; held
--   OUTCOME_HELD_BEHIND       not published: an earlier entry of its namespace is held; held
--   OUTCOME_NOT_OWNED         skipped: no longer pending for this consumer (another relay owns it,
--                             or it is acknowledged), so publishing it here would duplicate it
--   OUTCOME_ACKNOWLEDGED      dead-lettered and acknowledged (or acknowledged, for OP_GONE)
--   OUTCOME_ALREADY_PUBLISHED already published by this Redis process: acknowledged, not published
--   OUTCOME_PUBLISH_REFUSED   PUBLISH was refused (see errors); held
--   OUTCOME_TOO_FEW_RECEIVERS, value receivers   published, but PUBLISH reached fewer than min
--                             receivers; not journaled; held
--   OUTCOME_TO_PUBLISH, value servers   enough servers listen: for the relay to publish
--                             (FLAG_EXTERNAL)
--   OUTCOME_ATTEMPT_SENT, value servers   an attempt (OP_ATTEMPT) sent to the servers counted
--                             (none sent to no server)
--   OUTCOME_APPENDED, value servers   appended to the streams adapter's stream (the publish
--                             command XADD, the payload its arguments after the key) and
--                             acknowledged: delivered, nothing journaled
-- The servers' stream is named as the "channel" of its entries, not declared among the KEYS: the
-- relay runs it here only where it shares the source stream's slot (else FLAG_EXTERNAL).
local stream, dead, journal, held_record = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer = ARGV[1], ARGV[2]
local min_receivers = tonumber(ARGV[3])
local dead_max_len = tonumber(ARGV[4])
local run_id = ARGV[5]
local servers_command, servers_prefix, monitor_prefix = ARGV[9], ARGV[10], ARGV[11]
local publish_command, replies_count_servers = ARGV[12], ARGV[13] == '1'
local appends = publish_command == 'XADD'
local journal_field, per_namespace = ARGV[14], ARGV[15]
local given = tonumber(ARGV[16])
local FIRST_CONFIRM = 18 + 2 * given
local FIRST_OP = FIRST_CONFIRM + 3 * tonumber(ARGV[17 + 2 * given])

local function refuse(problem)
  return redis.error_reply('SIORELAY ' .. problem)
end

-- 1. Checks: nothing has happened yet, so a failure here leaves no trace.
local stream_type = redis.call('TYPE', stream)['ok']
if stream_type == 'none' then
  return redis.error_reply('NOGROUP the stream ' .. stream .. ' does not exist (deleted, or Redis lost it)')
elseif stream_type ~= 'stream' then
  return refuse('WRONGTYPE the source stream key ' .. stream .. ' holds a ' .. stream_type)
end
for _, key in ipairs({ { dead, 'stream', 'dead-letter stream' }, { journal, 'hash', 'journal' },
  { held_record, 'hash', 'held record' } }) do
  local found = redis.call('TYPE', key[1])['ok']
  if found ~= 'none' and found ~= key[2] then
    return refuse('WRONGTYPE the ' .. key[3] .. ' key ' .. key[1] .. ' holds a ' .. found .. ', not a ' .. key[2])
  end
end
local needs = {
  { 'XPENDING', stream, group, '-', '+', '1' },
  { 'XACK', stream, group, '0-1' },
  { 'XRANGE', stream, '-', '+' },
  { 'XADD', dead, '*', 'f', 'v' },
  { 'HGET', journal, 'f' },
  { 'HGETALL', journal },
  { 'HSET', journal, 'f', 'v' },
  { 'HSET', held_record, 'f', 'v' },
  { 'HDEL', held_record, 'f' },
  { 'PUBSUB', servers_command, servers_prefix },
}
for _, command in ipairs(needs) do
  if not redis.acl_check_cmd(unpack(command)) then
    return refuse('NOPERM the ACL user may not run ' .. command[1] .. ' on ' .. command[2])
  end
end
-- Where each operation starts, and whether any dead-letters or acknowledges.
local starts, any_dead = {}, false
local i = FIRST_OP
local argc = #ARGV
while i <= argc do
  starts[#starts + 1] = i
  local kind = ARGV[i]
  local size = OP_SIZE[kind]
  if size == nil then
    return refuse('BUG unknown operation ' .. tostring(kind))
  end
  i = i + size
  if kind == OP_DEAD_LETTER or kind == OP_GONE then
    any_dead = true
  end
end

-- 2. Reads: this consumer's pending entries in the batch's range, in one scan (an entry missing
-- from a scan cut short by its count is looked up on its own), servers per namespace, the journal.
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

local servers, counted = {}, {}
for j = 17, 16 + 2 * given, 2 do
  servers[ARGV[j]] = tonumber(ARGV[j + 1])
end
local function servers_of(namespace)
  local n = servers[namespace]
  if n == nil then
    n = count_servers(servers_command, servers_prefix, per_namespace, monitor_prefix, namespace)
    servers[namespace] = n
    counted[#counted + 1] = namespace
  end
  return n
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

-- The dead letter of entry `id`: its fields as produced (minus x-dead-* fields of an earlier death),
-- then the reason. Copied here, so that an entry of any size never travels through the relay. More
-- fields than one redis.call can carry (MAX_XADD_VALUES) go packed (MessagePack) in DEAD_PACKED.
local function dead_letter(id, deliveries, reason, detail)
  local found = redis.call('XRANGE', stream, id, id)[1]
  if not found then
    return false
  end
  local fields = {}
  for j = 1, #found[2], 2 do
    if string.sub(found[2][j], 1, #DEAD_PREFIX) ~= DEAD_PREFIX then
      fields[#fields + 1] = found[2][j]
      fields[#fields + 1] = found[2][j + 1]
    end
  end
  local xadd = { 'XADD', dead }
  if dead_max_len > 0 then
    xadd[#xadd + 1] = 'MAXLEN'
    xadd[#xadd + 1] = '~'
    xadd[#xadd + 1] = dead_max_len
  end
  xadd[#xadd + 1] = '*'
  if #fields > MAX_XADD_VALUES then
    xadd[#xadd + 1] = DEAD_PACKED
    xadd[#xadd + 1] = cmsgpack.pack(fields)
  else
    for _, item in ipairs(fields) do
      xadd[#xadd + 1] = item
    end
  end
  for _, pair in ipairs({ { DEAD_REASON, reason }, { DEAD_ERROR, detail }, { DEAD_STREAM, stream },
    { DEAD_ID, id }, { DEAD_DELIVERIES, deliveries } }) do
    xadd[#xadd + 1] = pair[1]
    xadd[#xadd + 1] = pair[2]
  end
  redis.call(unpack(xadd))
  return true
end

-- 3. Effects. Dead letters first: appending to the dead-letter stream is the one effect that could
-- still fail for a reason no check covers (an explicit ID that exhausted the stream's IDs), and
-- then nothing has been published. Publishes next, in order.
-- The loops run once per entry: globals are looked up once, counters kept by hand.
local results, errors, acked, published, hold, unhold = {}, {}, {}, {}, {}, {}
local published_in = {}
local n_acked, n_published = 0, 0
local holding = {}
local pcall_redis, find = redis.pcall, string.find
-- Hands a packet to the servers: PUBLISH or SPUBLISH, or XADD of the entry its payload packs.
local function send(channel, payload)
  if appends then
    return pcall_redis('XADD', channel, unpack(cmsgpack.unpack(payload)))
  end
  return pcall_redis(publish_command, channel, payload)
end
local function resolved(id, recorded)
  if recorded then
    unhold[#unhold + 1] = id
  end
end
local function held(id, recorded, deliveries, namespace)
  holding[namespace] = true
  if not recorded then
    hold[#hold + 1] = id
    hold[#hold + 1] = deliveries
  end
end
-- Acknowledges operation k's entry if this Redis process published it already (it is journaled):
-- publishing or dead-lettering it again would duplicate it. True when it did.
local function acknowledged_as_published(k, id, recorded)
  if not was_published(id) then
    return false
  end
  n_acked = n_acked + 1
  acked[n_acked] = id
  resolved(id, recorded)
  results[k] = OUTCOME_ALREADY_PUBLISHED
  return true
end

-- An operation's common items: kind, id, delivery count, flags, and where its own items start.
local function common(at)
  local kind = ARGV[at]
  if kind == OP_NEW then
    return kind, ARGV[at + 1], 1, false, false, false, false, at + 2
  end
  local flags = ARGV[at + 1]
  return kind, ARGV[at + 2], ARGV[at + 3], find(flags, FLAG_REDELIVERY, 1, true) ~= nil,
    find(flags, FLAG_RECORDED, 1, true) ~= nil, find(flags, FLAG_BEHIND, 1, true) ~= nil,
    find(flags, FLAG_EXTERNAL, 1, true) ~= nil, at + 4
end

for k, at in ipairs(any_dead and starts or {}) do
  local kind = ARGV[at]
  if kind == OP_DEAD_LETTER or kind == OP_GONE then
    local _, id, deliveries, redelivery, recorded, _, _, own = common(at)
    if not owned(id) then
      results[k] = OUTCOME_NOT_OWNED
    elseif redelivery and acknowledged_as_published(k, id, recorded) then
      -- Published already (it expired or ran out of attempts only while awaiting confirmation).
    else
      if kind == OP_DEAD_LETTER then
        dead_letter(id, deliveries, ARGV[own], ARGV[own + 1])
      end
      n_acked = n_acked + 1
      acked[n_acked] = id
      resolved(id, recorded)
      results[k] = OUTCOME_ACKNOWLEDGED
    end
  end
end

for k, at in ipairs(starts) do
  local kind = ARGV[at]
  if kind == OP_NEW or kind == OP_PUBLISH then
    local id, deliveries, redelivery, recorded, behind, external, own
    if kind == OP_NEW then
      id, deliveries, redelivery, recorded, behind, external, own = ARGV[at + 1], 1, false, false,
        false, false, at + 2
    else
      local _
      _, id, deliveries, redelivery, recorded, behind, external, own = common(at)
    end
    local namespace, channel, payload = ARGV[own], ARGV[own + 1], ARGV[own + 2]
    if not (mine[id] or (not complete and owned(id))) then
      results[k] = OUTCOME_NOT_OWNED
    elseif redelivery and acknowledged_as_published(k, id, recorded) then
      -- Published in this Redis process already: acknowledged, not published again.
    elseif behind or holding[namespace] then
      held(id, recorded, deliveries, namespace)
      results[k] = OUTCOME_HELD_BEHIND
    else
      local listening = servers[namespace] or servers_of(namespace)
      if listening < min_receivers then
        held(id, recorded, deliveries, namespace)
        results[k] = listening * OUTCOME_BASE + OUTCOME_TOO_FEW_SERVERS
      elseif external then
        resolved(id, recorded)
        results[k] = listening * OUTCOME_BASE + OUTCOME_TO_PUBLISH
      else
        local receivers = send(channel, payload)
        if type(receivers) == 'table' and receivers.err then
          held(id, recorded, deliveries, namespace)
          errors[#errors + 1] = k
          errors[#errors + 1] = tostring(receivers.err)
          results[k] = OUTCOME_PUBLISH_REFUSED
        elseif appends then
          n_acked = n_acked + 1
          acked[n_acked] = id
          resolved(id, recorded)
          results[k] = listening * OUTCOME_BASE + OUTCOME_APPENDED
        elseif replies_count_servers and receivers < min_receivers
          and (publish_command == 'PUBLISH' or channel == servers_prefix .. namespace .. '#') then
          held(id, recorded, deliveries, namespace)
          results[k] = receivers * OUTCOME_BASE + OUTCOME_TOO_FEW_RECEIVERS
        else
          n_published = n_published + 1
          published[n_published] = id
          published_in[namespace] = true
          if recorded then
            unhold[#unhold + 1] = id
          end
          results[k] = receivers * OUTCOME_BASE + OUTCOME_PUBLISHED
        end
      end
    end
  elseif kind == OP_ATTEMPT then
    local _, id, _, redelivery, recorded, _, external, own = common(at)
    local namespace, channel, payload = ARGV[own], ARGV[own + 1], ARGV[own + 2]
    if not (mine[id] or (not complete and owned(id))) then
      results[k] = OUTCOME_NOT_OWNED
    elseif redelivery and acknowledged_as_published(k, id, recorded) then
      -- Published as a plain entry by this Redis process (before `acks.default` was set).
    else
      local listening = servers[namespace] or servers_of(namespace)
      if listening > 0 and external then
        results[k] = listening * OUTCOME_BASE + OUTCOME_TO_PUBLISH
      elseif listening > 0 then
        local receivers = send(channel, payload)
        if type(receivers) == 'table' and receivers.err then
          errors[#errors + 1] = k
          errors[#errors + 1] = tostring(receivers.err)
          results[k] = OUTCOME_PUBLISH_REFUSED
        else
          results[k] = listening * OUTCOME_BASE + OUTCOME_ATTEMPT_SENT
        end
      else
        results[k] = OUTCOME_ATTEMPT_SENT
      end
    end
  end
end

-- After the entries: a server that answers has processed them.
local confirming = {}
for j = FIRST_CONFIRM, FIRST_OP - 1, 3 do
  if published_in[ARGV[j]] and type(send(ARGV[j + 1], ARGV[j + 2])) ~= 'table' then
    confirming[#confirming + 1] = ARGV[j]
  end
end

acknowledge(stream, group, acked)
if n_published > 0 then
  -- A field of its own: confirmed, it goes whole, whatever else is in flight.
  redis.call('HSET', journal, journal_field, run_id .. ' ' .. table.concat(published, ','))
end
call_in_chunks({ 'HSET', held_record }, hold)
call_in_chunks({ 'HDEL', held_record }, unhold)
local server_list = {}
for _, namespace in ipairs(counted) do
  server_list[#server_list + 1] = namespace
  server_list[#server_list + 1] = servers[namespace]
end
return { results, server_list, errors, confirming }
