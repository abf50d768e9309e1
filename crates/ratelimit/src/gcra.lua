-- GCRA check and settlement for cognitude-ratelimit, run atomically by Redis.
--
-- The decision itself is computed by the caller from the numbers returned here (the same code
-- the in-process limiter uses); the script only reads, compares and writes, all in one step, with
-- the server's clock, so every replica shares one limit whatever its own clock says.
--
-- KEYS: the bucket keys (nb of them), then the concurrency sets (nc of them).
-- ARGV[1] op: 'a' admit or 's' settle; ARGV[2] nb; ARGV[3] nc; ARGV[4] permit id.
-- admit:  ARGV[5] permit lease (us); per bucket: charge (us), capacity (us); per set: cap.
--         Returns {admitted 0/1, distance from full of each bucket (us), permits in use per set}.
--         Writes only when every bucket and set has room.
-- settle: per bucket: correction (us, negative refunds); then removes the permit from each set.
-- Times are whole microseconds; every value stays below 2^52 so doubles hold them exactly.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nb = tonumber(ARGV[2])
local nc = tonumber(ARGV[3])
local id = ARGV[4]

local function tat_of(key)
  local v = redis.call('GET', key)
  local tat = now
  if v then tat = tonumber(v) end
  if tat < now then tat = now end
  return tat
end

-- A bucket full again is deleted: an absent key and a TAT in the past mean the same.
local function store(key, tat)
  if tat > now then
    redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
  else
    redis.call('DEL', key)
  end
end

if ARGV[1] == 'a' then
  local lease = tonumber(ARGV[5])
  local out = {1}
  local new = {}
  for i = 1, nb do
    local tat = tat_of(KEYS[i])
    local charge = tonumber(ARGV[4 + 2 * i])
    local capacity = tonumber(ARGV[5 + 2 * i])
    new[i] = tat + charge
    if new[i] - now > capacity then out[1] = 0 end
    out[#out + 1] = tat - now
  end
  for j = 1, nc do
    local key = KEYS[nb + j]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local used = redis.call('ZCARD', key)
    if used >= tonumber(ARGV[5 + 2 * nb + j]) then out[1] = 0 end
    out[#out + 1] = used
  end
  if out[1] == 1 then
    for i = 1, nb do
      if tonumber(ARGV[4 + 2 * i]) > 0 then store(KEYS[i], new[i]) end
    end
    for j = 1, nc do
      local key = KEYS[nb + j]
      redis.call('ZADD', key, string.format('%.0f', now + lease), id)
      redis.call('PEXPIRE', key, math.ceil(lease / 1000))
    end
  end
  return out
end

if ARGV[1] == 's' then
  for i = 1, nb do
    local delta = tonumber(ARGV[4 + i])
    if delta ~= 0 then store(KEYS[i], tat_of(KEYS[i]) + delta) end
  end
  for j = 1, nc do
    redis.call('ZREM', KEYS[nb + j], id)
  end
  return {1}
end

return redis.error_reply('cognitude-ratelimit: unknown op ' .. tostring(ARGV[1]))
