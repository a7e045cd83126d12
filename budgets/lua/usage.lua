-- Usage: for each limit hash, what is used in the current period and when that period ends.
-- KEYS[i]: limit hashes; ARGV[i]: the window of KEYS[i]
local now = now_from_redis()
local out = {}
for i = 1, #KEYS do
  local number, ends = period(ARGV[i], now)
  local stored = redis.call('HMGET', KEYS[i], 'p', 'u')
  local used = 0
  if stored[1] and tonumber(stored[1]) == number then used = tonumber(stored[2]) or 0 end
  out[#out + 1] = used
  out[#out + 1] = tostring(ends)
end
return out
