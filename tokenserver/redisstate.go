/*
Copyright 2026 The servicekey-operator Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package tokenserver

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/redis/go-redis/v9"
)

// RedisOptions configure a RedisState.
type RedisOptions struct {
	// URL is redis://[user:password@]host:port/db, or rediss:// for TLS (go-redis's
	// ParseURL, with its query options such as dial_timeout).
	URL string
	// Password, when set, is used instead of the URL's (it comes from a Secret).
	Password string
	// Rate is the per-client rate limit, one bucket for the whole cluster.
	Rate Rate
	// ReplayPerClient bounds one client's unexpired assertions (beyond it: 429).
	ReplayPerClient int
	// FamiliesPerClient bounds one client's live refresh-token families.
	FamiliesPerClient int
	// Issuer separates installations sharing one Redis database: it is hashed into
	// every key name (see KeyPrefix).
	Issuer string
	// PoolSize is how many connections to keep at most (0: go-redis's default); set it
	// to the in-flight bound so a burst waits for a request slot, not a connection.
	PoolSize int
	// Log receives the outage's start and end, and refusals Redis answers with.
	Log logr.Logger
}

// RedisState is State in Redis (or Valkey): shared by every replica pointed at the same
// database. Each grant is one script run (one round trip), atomic in Redis, so two
// replicas cannot both accept one assertion or both take the last token of a bucket.
// Keys carry the client ID as a hash tag ({client}): a client's keys sit together.
// Every entry expires by itself (assertions at their exp, families at their end).
//
// When Redis does not answer, grants are refused with 503 temporarily_unavailable and
// Retry-After (fail closed: a replay could not be told from a first use), /readyz says
// so, and service resumes by itself when Redis answers again. The client retries no
// command on its own: a script whose reply was lost may have run, and running it again
// would refuse the grant as a replay.
type RedisState struct {
	client *redis.Client
	addr   string
	prefix string
	o      RedisOptions
	// down is true while Redis does not answer.
	down atomic.Bool
	mu   sync.Mutex
	// refusedLogged is when a refusal by Redis (an error reply) was last logged.
	refusedLogged time.Time
}

// NewRedisState connects lazily: a Redis that is down at start is reported by
// Problem and retried, not fatal.
func NewRedisState(o RedisOptions) (*RedisState, error) {
	opt, err := ParseRedisURL(o.URL)
	if err != nil {
		return nil, err
	}
	if o.Password != "" {
		opt.Password = o.Password
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = -1 // no retries: see the type's comment
	}
	opt.DialTimeout = cmp.Or(opt.DialTimeout, time.Second)
	opt.ReadTimeout = cmp.Or(opt.ReadTimeout, time.Second)
	opt.WriteTimeout = cmp.Or(opt.WriteTimeout, time.Second)
	opt.DialerRetries = cmp.Or(opt.DialerRetries, 1) // a down Redis answers 503 within seconds, not after five dials
	opt.PoolSize = cmp.Or(opt.PoolSize, o.PoolSize)
	o.ReplayPerClient = max(o.ReplayPerClient, 1)
	o.FamiliesPerClient = max(o.FamiliesPerClient, 1)
	return &RedisState{client: redis.NewClient(opt), addr: opt.Addr, prefix: KeyPrefix(o.Issuer), o: o}, nil
}

// ParseRedisURL reads a --shared-state URL. Its errors never quote the URL: it may
// hold a password, and both net/url's errors and go-redis's quote what they could not
// parse (a password with '/', '%' or '?' in it, unescaped, ends up in the host, path or
// query), so every error is replaced by a fixed text.
func ParseRedisURL(raw string) (*redis.Options, error) {
	opt, err := redis.ParseURL(raw)
	if err != nil {
		return nil, errors.New("--shared-state must be redis://[user:password@]host:port/db or rediss://... " +
			"(the text is not shown: it may hold a password); percent-encode the password, or pass it in $SERVICEKEY_SHARED_STATE_PASSWORD")
	}
	return opt, nil
}

// KeyPrefix starts every key of the installation with this issuer:
// servicekey:<first 8 bytes of SHA-256(issuer), hex>:.
func KeyPrefix(issuer string) string {
	sum := sha256.Sum256([]byte(issuer))
	return "servicekey:" + hex.EncodeToString(sum[:8]) + ":"
}

// Close closes the connections.
func (s *RedisState) Close() error { return s.client.Close() }

// Addr is the Redis address (host:port), never the password.
func (s *RedisState) Addr() string { return s.addr }

// ProbeInterval is how often Run asks Redis whether it answers.
const ProbeInterval = time.Second

// Run pings Redis every ProbeInterval until ctx is done, so /readyz reports an outage
// and its end without waiting for a grant.
func (s *RedisState) Run(ctx context.Context) {
	t := time.NewTicker(ProbeInterval)
	defer t.Stop()
	for {
		s.observe(s.client.Ping(ctx).Err())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// unreachable is what Problem says while Redis does not answer. Generic: /readyz is on
// the public port; the address and the error go to the log.
const unreachable = "the shared state (Redis) does not answer; grants are refused with 503 until it does"

// observe records whether Redis answered, logging the changes only (a down Redis under
// load would otherwise log every request). An answer costs one atomic load.
func (s *RedisState) observe(err error) {
	switch {
	case errors.Is(err, context.Canceled):
	case err == nil:
		if s.down.Load() && s.down.Swap(false) {
			s.o.Log.Info("shared state reachable again", "redis", s.addr)
		}
	case !s.down.Swap(true):
		s.o.Log.Error(err, "shared state unreachable: grants are refused with 503 temporarily_unavailable", "redis", s.addr)
	}
}

// Problem implements State.
func (s *RedisState) Problem() string {
	if s.down.Load() {
		return unreachable
	}
	return ""
}

// key is the name of a client's entry; the {client} hash tag keeps a client's keys in
// one slot.
func (s *RedisState) key(clientID, kind string) string {
	return s.prefix + "{" + clientID + "}:" + kind
}

// rateLua takes a token from the bucket KEYS[2] (GCRA: the bucket is the theoretical
// arrival time of the next request), or returns {'rate', wait in ms}. It reads now,
// interval (ms per token, 0: no limit) and burst.
const rateLua = `
local function take(bucket, now, interval, burst)
  if interval <= 0 then return nil end
  local tat = math.max(tonumber(redis.call('GET', bucket) or '0'), now) + interval
  local wait = tat - burst * interval - now
  if wait > 0 then return {'rate', tostring(wait)} end
  redis.call('SET', bucket, tostring(tat), 'PX', math.ceil(tat - now))
  return nil
end
`

// admitScript is Admit. KEYS: replay set, bucket, family index, new family.
// ARGV: now, digest (empty for none), replay until, replay share, interval, burst, family ID
// (empty for none), its hash, binding, UID, scope, end, families per client, family key
// prefix, generation.
var admitScript = redis.NewScript(rateLua + `
local now = tonumber(ARGV[1])
local digest = ARGV[2]
if digest ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZSCORE', KEYS[1], digest) then return {'replay'} end
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {'full', tostring(tonumber(first[2]) - now)}
  end
end
local limited = take(KEYS[2], now, tonumber(ARGV[5]), tonumber(ARGV[6]))
if limited then return limited end
if digest ~= '' then
  local untilms = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], untilms, digest)
  if redis.call('PTTL', KEYS[1]) < untilms - now then redis.call('PEXPIREAT', KEYS[1], untilms) end
end
if ARGV[7] ~= '' then
  local ends = tonumber(ARGV[12])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  while redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[13]) do
    local oldest = redis.call('ZPOPMIN', KEYS[3])
    redis.call('DEL', ARGV[14] .. oldest[1])
  end
  redis.call('HSET', KEYS[4], 'h', ARGV[8], 'b', ARGV[9], 'u', ARGV[10], 's', ARGV[11], 'e', ARGV[12], 'g', ARGV[15])
  redis.call('PEXPIREAT', KEYS[4], ends)
  redis.call('ZADD', KEYS[3], ends, ARGV[7])
  if redis.call('PTTL', KEYS[3]) < ends - now then redis.call('PEXPIREAT', KEYS[3], ends) end
end
return {'ok'}
`)

// refreshScript is Refresh. KEYS: family, bucket, family index. ARGV: now, presented
// hash, next hash, UID, bindings (space-separated), requested scope, interval, burst,
// family ID, generation.
var refreshScript = redis.NewScript(rateLua + `
local now = tonumber(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'h', 'b', 'u', 's', 'e', 'g')
local function drop() redis.call('DEL', KEYS[1]); redis.call('ZREM', KEYS[3], ARGV[9]) end
if not f[1] or tonumber(f[5]) <= now then drop(); return {'unknown'} end
if f[1] ~= ARGV[2] then drop(); return {'reused'} end
local bound = false
for b in string.gmatch(ARGV[5], '%S+') do if b == f[2] then bound = true end end
local fgen, gen = tonumber(f[6] or '0'), tonumber(ARGV[10])
if f[3] == ARGV[4] and fgen > gen then return {'lagging'} end
if f[3] ~= ARGV[4] or fgen < gen or not bound then drop(); return {'gone'} end
local have = {}
for sc in string.gmatch(f[4], '%S+') do have[sc] = true end
for sc in string.gmatch(ARGV[6], '%S+') do if not have[sc] then return {'scope', f[4]} end end
local limited = take(KEYS[2], now, tonumber(ARGV[7]), tonumber(ARGV[8]))
if limited then return limited end
redis.call('HSET', KEYS[1], 'h', ARGV[3])
return {'ok', f[2], f[4], f[5]}
`)

// interval is the bucket's milliseconds per token (0: no limit).
func (s *RedisState) interval() float64 {
	if s.o.Rate.PerSecond <= 0 {
		return 0
	}
	return 1000 / s.o.Rate.PerSecond
}

func ms(t time.Time) int64 { return t.UnixMilli() }

// Admit implements State in one script run.
func (s *RedisState) Admit(ctx context.Context, a Admission) *Error {
	digest, until := "", int64(0)
	if a.Digest != nil {
		digest, until = string(a.Digest[:]), ms(a.ReplayUntil.Add(ClockSkewMargin))
	}
	f := a.Family
	if f == nil {
		f = &Family{}
	}
	famKey := s.key(a.ClientID, "family:"+f.ID)
	res, err := admitScript.Run(ctx, s.client,
		[]string{s.key(a.ClientID, "replay"), s.key(a.ClientID, "rate"), s.key(a.ClientID, "families"), famKey},
		ms(a.Now), digest, until, s.o.ReplayPerClient, s.interval(), max(s.o.Rate.Burst, 1),
		f.ID, string(f.Current[:]), f.Binding, string(f.UID), f.Scope, ms(f.Expires), s.o.FamiliesPerClient,
		s.key(a.ClientID, "family:"), f.Generation).StringSlice()
	if err != nil {
		return s.failed(err)
	}
	s.observe(nil)
	switch res[0] {
	case "ok":
		return nil
	case "replay":
		return replayError(a.Code)
	case "full":
		return errReplayShareFull(a.ClientID, s.o.ReplayPerClient, waitOf(res))
	case "rate":
		return errRateLimited(a.ClientID, waitOf(res))
	}
	return errStateUnavailable()
}

// Refresh implements State in one script run.
func (s *RedisState) Refresh(ctx context.Context, r Rotation) (Family, *Error) {
	res, err := refreshScript.Run(ctx, s.client,
		[]string{s.key(r.ClientID, "family:"+r.FamilyID), s.key(r.ClientID, "rate"), s.key(r.ClientID, "families")},
		ms(r.Now), string(r.Presented[:]), string(r.Next[:]), string(r.UID), strings.Join(r.Bindings, " "), r.Scope,
		s.interval(), max(s.o.Rate.Burst, 1), r.FamilyID, r.Generation).StringSlice()
	if err != nil {
		return Family{}, s.failed(err)
	}
	s.observe(nil)
	switch res[0] {
	case "ok":
		if len(res) < 4 {
			break
		}
		ends, _ := strconv.ParseInt(res[3], 10, 64)
		return Family{ID: r.FamilyID, ClientID: r.ClientID, Binding: res[1], UID: r.UID, Generation: r.Generation, Scope: res[2],
			Expires: time.UnixMilli(ends), Current: r.Presented}, nil
	case "unknown":
		return Family{}, errRefreshUnknown()
	case "reused":
		return Family{}, errRefreshReused()
	case "gone":
		return Family{}, errRefreshKeyGone(r.ClientID)
	case "lagging":
		return Family{}, errRefreshLagging()
	case "scope":
		if len(res) > 1 {
			return Family{}, errRefreshScope(res[1])
		}
	case "rate":
		return Family{}, errRateLimited(r.ClientID, waitOf(res))
	}
	return Family{}, errStateUnavailable()
}

// ClockSkewMargin is how much longer than exp plus the leeway Redis keeps an
// assertion: replicas judge exp by their own clocks, and one whose clock is behind
// must still find the entry that a replica ahead of it wrote.
const ClockSkewMargin = time.Minute

// failed answers a call whose script did not complete. An error reply (Redis out of
// memory under noeviction, a script error) is Redis refusing, not an outage: /readyz
// stays as it is, and the log says it at most every 10 seconds. Anything else (no
// connection, a timeout, no free connection in time) is an outage.
func (s *RedisState) failed(err error) *Error {
	var reply redis.Error
	if !errors.As(err, &reply) {
		s.observe(err)
		return errStateUnavailable()
	}
	s.mu.Lock()
	log := time.Since(s.refusedLogged) > 10*time.Second
	if log {
		s.refusedLogged = time.Now()
	}
	s.mu.Unlock()
	if log {
		s.o.Log.Error(err, "the shared state refused a grant's script; grants are answered 503", "redis", s.addr)
	}
	return errStateRefused()
}

// waitOf reads a script's wait (ms) as a Retry-After of at least one second.
func waitOf(res []string) time.Duration {
	if len(res) < 2 {
		return time.Second
	}
	w, _ := strconv.ParseFloat(res[1], 64)
	return max(time.Duration(math.Ceil(w))*time.Millisecond, time.Second)
}
