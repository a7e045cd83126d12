-- Settle a lease, once: charge what its grants spent, and either keep holding what its requests
-- still in flight hold (under a new marker, to be settled when they are done) or release it all.
-- Idempotent through the marker: a call retried after a timeout finds it gone and does nothing.
-- KEYS[i]: the lease's limit hashes, then its marker, its tombstone and the marker that follows
-- ARGV: tokens and micro-dollars spent, requests made, tokens and micro-dollars still held,
--       mode (0: keep holding the rest, 1: the last settlement, 2: cancel a lease whose taking
--       may not have arrived yet), then each key's metric
local n = #KEYS - 3
local marker, tombstone, next_marker = KEYS[n + 1], KEYS[n + 2], KEYS[n + 3]
local mode = ARGV[6]
local holding = redis.call('GET', marker)
if not holding then
  if mode == '2' then redis.call('SET', tombstone, '1', 'EX', 3600) end
  return 0
end
local spent = {tokens = tonumber(ARGV[1]), usd = tonumber(ARGV[2]), requests = tonumber(ARGV[3])}
local keep = {tokens = tonumber(ARGV[4]), usd = tonumber(ARGV[5]), requests = 0}
if mode == '2' then spent = {tokens = 0, usd = 0, requests = 0} end
local values = {}
for value in string.gmatch(holding, '[^,]+') do values[#values + 1] = value end
local following = {}
for i = 1, n do
  local period, amount = values[(i - 1) * 2 + 1], tonumber(values[(i - 1) * 2 + 2])
  local metric = ARGV[6 + i]
  local still = mode == '0' and keep[metric] or 0
  if redis.call('HGET', KEYS[i], 'p') == period then
    local delta = spent[metric] + still - amount
    if delta ~= 0 and redis.call('HINCRBY', KEYS[i], 'u', delta) < 0 then redis.call('HSET', KEYS[i], 'u', 0) end
    local freed = amount - still
    if freed ~= 0 and redis.call('HINCRBY', KEYS[i], 'h', -freed) < 0 then redis.call('HSET', KEYS[i], 'h', 0) end
    if mode ~= '0' and redis.call('HINCRBY', KEYS[i], 'f', -1) < 0 then redis.call('HSET', KEYS[i], 'f', 0) end
  end
  following[#following + 1] = period
  following[#following + 1] = still
end
local ttl = redis.call('TTL', marker)
redis.call('DEL', marker)
if mode == '0' and ttl > 0 then
  redis.call('SET', next_marker, table.concat(following, ','), 'EX', ttl)
end
return 1
