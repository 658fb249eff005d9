#!lua flags=allow-oom
-- The lease on a consumer name: one relay at a time may run as a given consumer of the group, since
-- two relays sharing a name share one pending list and publish each other's entries twice.
-- The leases live in one hash (consumer -> "<deadline ms> <holder>"), with deadlines in Redis's own
-- clock (TIME), so that the relays' clocks never matter. allow-oom: a lease is a few bytes and must
-- outlive a full Redis.
--
-- KEYS[1] the leases hash; ARGV[1] consumer; ARGV[2] this relay's holder text; ARGV[3] lease time
-- in milliseconds; ARGV[4] action:
--   LEASE_TAKE     take the lease if it is free, expired, or holds exactly ARGV[5] (the value the
--                  caller saw and found dead)
--   LEASE_RENEW    extend the lease this relay holds
--   LEASE_RELEASE  drop the lease this relay holds
-- Returns { 1 } when done, else { 0, the current value, milliseconds left } (for LEASE_RENEW: the
-- lease is someone else's now).
local leases, consumer, holder = KEYS[1], ARGV[1], ARGV[2]
local ttl, action = tonumber(ARGV[3]), ARGV[4]
if action ~= LEASE_TAKE and action ~= LEASE_RENEW and action ~= LEASE_RELEASE then
  return redis.error_reply('SIORELAY BUG unknown lease action ' .. tostring(action))
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local current = redis.call('HGET', leases, consumer)
local deadline, current_holder = nil, nil
if current then
  local space = string.find(current, ' ', 1, true)
  deadline = tonumber(string.sub(current, 1, space - 1))
  current_holder = string.sub(current, space + 1)
end

if action == LEASE_RELEASE then
  if current_holder == holder then
    redis.call('HDEL', leases, consumer)
  end
  return { 1 }
end
-- A lease that expired while its relay could not reach Redis, and that nobody took, is renewed.
local free = current == false or deadline <= now or (action == LEASE_TAKE and current == ARGV[5])
if current_holder == holder or free then
  redis.call('HSET', leases, consumer, (now + ttl) .. ' ' .. holder)
  return { 1 }
end
return { 0, current, deadline - now }
