package settle

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// TestRedisMemoryPerClaim measures, on a real redis-server of the test's own (so that
// INFO memory deltas are this test's alone), what each accepted and each rejected claim
// costs in Redis before and after the settler has settled it, piece by piece, and
// prints the table and the figure for a 10-million-user sale:
//
//	go test -count=1 -v -run TestRedisMemoryPerClaim ./settler/settle/
//
// Ids have production-like lengths: request_id a 36-char UUID, user_id 16 chars,
// device_id 32 hex chars, the campaign id 16 chars (so claim ids are 43). The velocity
// logs are written with the commands claim.lua's risk step uses (ZADD now request_id,
// PEXPIRE window) under rkeys.Velocity. It asserts only structural facts: the settler's
// trim empties the outbox and the inflight hash and frees their memory, and leaves the
// idempotency records (state S) in place.
func TestRedisMemoryPerClaim(t *testing.T) {
	rdb := privateRedis(t)
	pg := testenv.PG(t)
	ctx := context.Background()
	const n = 5000 // accepted claims; as many rejected requests again

	c := testenv.NewCampaign(t, rdb, pg, n)
	defer c.Forget(t, pg)
	req := func(i int, user int) claim.Record {
		return claim.Record{
			RequestID: fmt.Sprintf("%08x-1c2b-4d3e-8f40-%012x", i, i),
			UserID:    fmt.Sprintf("user-%011d", user),
			DeviceID:  fmt.Sprintf("%032x", user),
			IP:        "203.0.113." + strconv.Itoa(user%250),
		}
	}
	used := func() int64 { return infoUsed(t, rdb) }

	// Accepted: n users, one request each, in script calls of 100 like the gateway's batches.
	before := used()
	var recs []claim.Record
	for i := 0; i < n; i += 100 {
		reqs := make([]claim.Record, 100)
		for j := range reqs {
			reqs[j] = req(i+j, i+j)
		}
		for k, code := range c.Decide(t, reqs) {
			if code != claim.CodeAccepted {
				t.Fatalf("request %d: code %d, want accepted", i+k, code)
			}
		}
		recs = append(recs, reqs...)
	}
	acceptedTotal := used() - before

	reqKeys := make([]string, n)
	for i, r := range recs {
		reqKeys[i] = rkeys.Request(c.ID, r.RequestID)
	}
	type row struct {
		piece    string
		accepted float64 // bytes per accepted claim before settlement
		settled  float64 // after the settler trimmed
		comment  string
	}
	rq := sumUsage(t, rdb, reqKeys) / n
	outbox := usage(t, rdb, rkeys.Outbox(c.ID)) / n
	inflight := usage(t, rdb, rkeys.Inflight(c.ID)) / n
	users := usage(t, rdb, rkeys.Users(c.ID)) / n

	// Durable (D) then settled (S) by the real settle path: confirm, write, trim.
	c.MarkDurable(t, recs)
	rqD := sumUsage(t, rdb, reqKeys) / n
	cfg, err := Config{Brokers: []string{"127.0.0.1:1"}, Group: "mem"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	s := &Settler{cfg: cfg, rdb: rdb, pg: pg, m: NewMetrics(nil), method: writeChosen,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	beforeSettle := used()
	if _, err := s.settleItems(ctx, benchItems(recs)); err != nil {
		t.Fatal(err)
	}
	freed := beforeSettle - used()
	if ob, inf := c.Leftovers(t); ob != 0 || inf != 0 {
		t.Fatalf("after settling: outbox %d entries, inflight %d fields; want 0, 0", ob, inf)
	}
	rqS := sumUsage(t, rdb, reqKeys) / n
	outboxS := usage(t, rdb, rkeys.Outbox(c.ID)) / n
	inflightS := usage(t, rdb, rkeys.Inflight(c.ID)) / n
	if outboxS >= outbox || inflightS >= inflight {
		t.Fatalf("the trim freed nothing: outbox %.0f -> %.0f B/claim, inflight %.0f -> %.0f", outbox, outboxS, inflight, inflightS)
	}
	if st := c.RequestState(t, recs[0].RequestID); st != "S" {
		t.Fatalf("idempotency record after settling: state %q, want S (it stays until campaign end + grace)", st)
	}

	// Velocity logs, as claim.lua's risk step keeps them for accepted claims when rules are on: one sorted
	// set per device and per user of the campaign (a member per accepted request in the
	// window), and one per IP (shared: here 250 IPs for n users).
	window := time.Minute.Milliseconds()
	now := time.Now().UnixMilli()
	pipe := rdb.Pipeline()
	var velKeys []string
	for _, r := range recs {
		for _, k := range []string{rkeys.Velocity(c.ID, rkeys.KindDevice, r.DeviceID), rkeys.Velocity(c.ID, rkeys.KindUser, r.UserID)} {
			pipe.ZAdd(ctx, k, redis.Z{Score: float64(now), Member: r.RequestID})
			pipe.PExpire(ctx, k, time.Duration(window)*time.Millisecond)
			velKeys = append(velKeys, k)
		}
		k := rkeys.Velocity(c.ID, rkeys.KindIP, r.IP)
		pipe.ZAdd(ctx, k, redis.Z{Score: float64(now), Member: r.RequestID})
		pipe.PExpire(ctx, k, time.Duration(window)*time.Millisecond)
	}
	beforeVel := used()
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	velTotal := used() - beforeVel
	velDevUser := sumUsage(t, rdb, velKeys) / n
	defer rdb.Del(ctx, velKeys...)

	// Rejected: the same users again with new request ids (user_limit), and as many new
	// users after the stock is gone (sold_out): each leaves a remembered rejection
	// (state R, TTL 1 h) and a count in the campaign's rejection hash.
	beforeRej := used()
	var rejKeys []string
	for i := 0; i < 2*n; i += 100 {
		reqs := make([]claim.Record, 100)
		for j := range reqs {
			reqs[j] = req(n+i+j, i+j) // users 0..2n: the first n hit user_limit, the rest sold_out
		}
		for k, code := range c.Decide(t, reqs) {
			if code != claim.CodeUserLimit && code != claim.CodeSoldOut {
				t.Fatalf("request %d: code %d, want user_limit or sold_out", n+i+k, code)
			}
			rejKeys = append(rejKeys, rkeys.Request(c.ID, reqs[k].RequestID))
		}
	}
	rejTotal := used() - beforeRej
	rej := sumUsage(t, rdb, rejKeys) / float64(len(rejKeys))
	defer rdb.Del(ctx, rejKeys...)
	if ttl := rdb.PTTL(ctx, rejKeys[0]).Val(); ttl <= 0 || ttl > time.Hour {
		t.Fatalf("rejection record TTL %s, want (0, 1h]", ttl)
	}

	rows := []row{
		{"idempotency record fg:{c}:rq:<id>", rq, rqS, fmt.Sprintf("A %.0f, D %.0f, S %.0f; lives until campaign end + 24 h", rq, rqD, rqS)},
		{"outbox stream entry", outbox, outboxS, "XDEL by the settler"},
		{"inflight hash field", inflight, inflightS, "HDEL by the settler"},
		{"per-user count field", users, users, "the campaign's life"},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nRedis %s, bytes per claim (MEMORY USAGE SAMPLES 0; keys with a TTL cost about 32 B more each in the expires table):\n", redisVersion(t, rdb))
	fmt.Fprintf(&b, "%-36s %10s %10s  %s\n", "piece", "accepted", "settled", "")
	var sumA, sumS float64
	for _, r := range rows {
		fmt.Fprintf(&b, "%-36s %10.0f %10.0f  %s\n", r.piece, r.accepted, r.settled, r.comment)
		sumA += r.accepted
		sumS += r.settled
	}
	fmt.Fprintf(&b, "%-36s %10.0f %10.0f\n", "sum", sumA, sumS)
	fmt.Fprintf(&b, "%-36s %10.0f %10s  INFO used_memory delta over %d accepted claims\n", "measured total (INFO)", float64(acceptedTotal)/n, "", n)
	fmt.Fprintf(&b, "%-36s %10s %10.0f  INFO used_memory freed by the settle path\n", "freed by settlement (INFO)", "", float64(freed)/n)
	fmt.Fprintf(&b, "%-36s %10.0f %10s  device + user sorted sets, 1 entry each (MEMORY USAGE); INFO with IP logs: %.0f\n",
		"velocity logs (risk rules on)", velDevUser, "", float64(velTotal)/n)
	fmt.Fprintf(&b, "%-36s %10.0f %10s  state R, TTL 1 h; INFO delta per rejection: %.0f\n", "rejection record", rej, "", float64(rejTotal)/float64(len(rejKeys)))

	// A 10-million-user sale: every user makes one request, 100,000 are accepted and the
	// rest are rejected (each rejection remembered for 1 h), measured per piece above
	// with INFO figures (they include the expires table and allocator rounding).
	const users10M, accepted10M = 10_000_000, 100_000
	perAcc := float64(acceptedTotal) / n
	perAccSettled := perAcc - float64(freed)/n
	perRej := float64(rejTotal) / float64(len(rejKeys))
	peak := accepted10M*perAcc + (users10M-accepted10M)*perRej
	settled := accepted10M*perAccSettled + (users10M-accepted10M)*perRej
	fmt.Fprintf(&b, "\n10M-user sale (100k accepted, 9.9M rejections remembered 1 h):\n")
	fmt.Fprintf(&b, "  accepted, unsettled: %6.1f MB   accepted, settled: %6.1f MB\n", accepted10M*perAcc/1e6, accepted10M*perAccSettled/1e6)
	fmt.Fprintf(&b, "  rejections:          %6.1f MB\n", (users10M-accepted10M)*perRej/1e6)
	fmt.Fprintf(&b, "  total at the peak (nothing settled yet): %.2f GB; once settled: %.2f GB; after the rejections' hour: %.1f MB\n",
		peak/1e9, settled/1e9, accepted10M*perAccSettled/1e6)
	// claim.lua logs only accepted claims in the velocity windows (record() runs after
	// the claim is taken), so they scale with the accepted claims, not the requests.
	fmt.Fprintf(&b, "  with velocity rules on: + %.0f B per accepted claim while its window lasts (device, user and IP logs) => %.1f MB\n",
		float64(velTotal)/n, accepted10M*float64(velTotal)/n/1e6)
	t.Log(b.String())
}

// privateRedis starts a redis-server of the test's own (no persistence) so its memory
// figures are not moved by other tests on the shared one.
func privateRedis(t *testing.T) *redis.Client {
	t.Helper()
	return testenv.PrivateRedis(t)
}

func usage(t *testing.T, rdb *redis.Client, key string) float64 {
	t.Helper()
	v, err := rdb.MemoryUsage(context.Background(), key, 0).Result()
	if err == redis.Nil {
		return 0
	}
	if err != nil {
		t.Fatalf("MEMORY USAGE %s: %v", key, err)
	}
	return float64(v)
}

func sumUsage(t *testing.T, rdb *redis.Client, keys []string) float64 {
	t.Helper()
	pipe := rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.MemoryUsage(context.Background(), k, 0)
	}
	if _, err := pipe.Exec(context.Background()); err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	var sum int64
	for _, c := range cmds {
		sum += c.Val()
	}
	return float64(sum)
}

func infoUsed(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	return infoField(t, rdb, "used_memory")
}

func infoField(t *testing.T, rdb *redis.Client, field string) int64 {
	t.Helper()
	s, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("INFO memory has no %s", field)
	return 0
}

func redisVersion(t *testing.T, rdb *redis.Client) string {
	s, _ := rdb.Info(context.Background(), "server").Result()
	for _, line := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(line, "redis_version:"); ok {
			return v
		}
	}
	return "?"
}
