package risk_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/gateway/claimer/claimertest"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// Flood bounds (RELIABILITY.md "Redis memory under abuse"): a flood of unique
// request_ids against a campaign that is not started, paused or sold out leaves no key
// per request and grows used_memory by less than floodMemBound.
const (
	floodN        = 50_000
	floodTime     = 40 * time.Second // per campaign: bounded on a loaded machine
	floodMin      = 10_000           // fewer requests than this in floodTime proves nothing
	floodMemBound = 1 << 20          // bytes; 50,000 remembered rejections take ~7 MB
)

func redisInfo(t *testing.T, e *testenv.Env, section, field string) int64 {
	t.Helper()
	info, err := e.RDB.Info(testenv.Ctx(t, 5*time.Second), section).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("INFO %s %s=%q", section, field, v)
			}
			return n
		}
	}
	t.Fatalf("INFO %s has no %s", section, field)
	return 0
}

// flood sends n claims with unique request, user and device ids from 32 callers until n
// are answered or d has passed, and returns how many were answered with want.
func flood(t *testing.T, c *claimer.Claimer, camp, tag string, n int, d time.Duration, want int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var next, got atomic.Int64
	var bad atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				id := tag + "-" + strconv.FormatInt(i, 10)
				r := &claimer.Request{RequestID: "rq-" + id, CampaignID: camp, SKU: "rp-50", UserID: "u-" + id,
					DeviceID: "d-" + id, IP: "10.77.0.1"}
				if err := c.Do(ctx, r); err != nil {
					if ctx.Err() == nil && !errors.Is(err, claimer.ErrOverloaded) {
						bad.Store(fmt.Sprintf("claim %s: %v", id, err))
					}
					continue
				}
				if r.Code != want {
					bad.Store(fmt.Sprintf("claim %s: code %d, want %d", id, r.Code, want))
					continue
				}
				got.Add(1)
			}
		})
	}
	wg.Wait()
	if b := bad.Load(); b != nil {
		t.Fatal(b)
	}
	return int(got.Load())
}

// Issue 14, "Redis memory under abuse": a bounded flood of unique request_ids at a
// not-started, a paused and a sold-out campaign leaves a bounded amount in Redis (its
// own, so nothing else moves used_memory): no key per request (DBSIZE unchanged) and
// used_memory grown by less than floodMemBound.
func TestFloodOfUniqueRequestIDsLeavesBoundedMemory(t *testing.T) {
	e := testenv.Private(t)
	ctx := testenv.Ctx(t, 3*time.Minute)

	notStarted := e.Campaign(testenv.Spec{Start: time.Hour, End: 2 * time.Hour,
		SKUs: []testenv.SKU{{SKU: "rp-50", Stock: 100, Value: 50}}}).ID
	paused := e.StockCampaign(100, 1)
	if err := e.Cat.SetPaused(ctx, paused, true); err != nil {
		t.Fatal(err)
	}
	soldOut := e.StockCampaign(1, 1)

	c := claimertest.New(e, nil)
	if got := claimertest.Claim(t, c, soldOut, "u-first", "d-first", "10.77.0.2"); got.Code != claim.CodeAccepted {
		t.Fatalf("the only unit: code %d", got.Code)
	}

	for _, tc := range []struct {
		name, camp string
		code       int
	}{
		{"not_started", notStarted, claim.CodeNotStarted},
		{"paused", paused, claim.CodePaused},
		{"sold_out", soldOut, claim.CodeSoldOut},
	} {
		// A warm-up first, so the claimer's connections and the campaign's counters exist.
		if got := flood(t, c, tc.camp, tc.name+"-warm", 500, floodTime, tc.code); got != 500 {
			t.Fatalf("%s warm-up: %d of 500 answered %d", tc.name, got, tc.code)
		}
		// The short-circuit's rejection counts are flushed a moment later; the hash must
		// exist before the count of keys is taken.
		testenv.Eventually(t, 10*time.Second, tc.name+" rejection counts flushed", func() bool {
			return e.RDB.Exists(ctx, rkeys.Rejections(tc.camp)).Val() == 1
		})
		keys0, mem0 := e.RDB.DBSize(ctx).Val(), redisInfo(t, e, "memory", "used_memory")
		start := time.Now()
		got := flood(t, c, tc.camp, tc.name, floodN, floodTime, tc.code)
		took := time.Since(start)
		keys1, mem1 := e.RDB.DBSize(ctx).Val(), redisInfo(t, e, "memory", "used_memory")
		t.Logf("%s: %d unique request_ids in %s: keys %d -> %d, used_memory %d -> %d (%+d bytes, bound %d)",
			tc.name, got, took.Round(time.Millisecond), keys0, keys1, mem0, mem1, mem1-mem0, floodMemBound)
		if got < floodMin {
			t.Fatalf("%s: only %d requests answered in %s; the flood proves nothing below %d", tc.name, got, floodTime, floodMin)
		}
		if keys1 != keys0 {
			t.Errorf("%s: the flood added %d keys to Redis; want none per request", tc.name, keys1-keys0)
		}
		if mem1-mem0 >= floodMemBound {
			t.Errorf("%s: used_memory grew %d bytes over %d requests; bound %d", tc.name, mem1-mem0, got, floodMemBound)
		}
	}
}
