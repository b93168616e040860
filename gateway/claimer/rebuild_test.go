package claimer_test

import (
	"context"
	"errors"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// Issue 21.5: while Redis has lost a campaign and until it is rebuilt, a campaign known
// in Postgres answers 503 (retry) - never 404 unknown_campaign - whether the gateway
// still holds its route (claim.lua finds no meta) or loads it afresh (nothing in Redis
// yet, then the fence's token). A campaign that exists nowhere is still 404.
func TestKnownCampaignIs503WhileRebuilt(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found (make up installs it): %v", err)
	}
	port := testenv.FreePort(t)
	testenv.Start(t, bin, nil, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no")
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port)})
	t.Cleanup(func() { rdb.Close() })
	testenv.Eventually(t, 10*time.Second, "private redis answers", func() bool { return rdb.Ping(context.Background()).Err() == nil })
	pg := testenv.PG(t)
	e := &env{t: t, rdb: rdb, cat: catalog.New(pg, rdb)}
	c := e.liveClaimer(claimer.Config{})
	ctx := context.Background()
	bl := testenv.ID(t, "bl")
	if err := e.cat.PutBusinessLine(ctx, bl, 1_000_000); err != nil {
		t.Fatal(err)
	}
	cmp := e.campaign(bl, campaignSpec{start: -time.Minute})
	e.expect(c, req(cmp, "rp-50", "u0", "r0"), claim.CodeAccepted, true)

	unavailable := func(stage, user string) {
		t.Helper()
		r := req(cmp, "rp-50", user, "r-"+user)
		err := e.do(c, r)
		if !errors.Is(err, claimer.ErrUnavailable) {
			t.Fatalf("%s: %s, err %v; want 503 (ErrUnavailable)", stage, reason(r.Code), err)
		}
	}
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	unavailable("Redis lost everything, route still cached", "u1")
	c.Forget(cmp)
	unavailable("Redis lost everything, route loaded again", "u2")

	g := testenv.NewGate()
	rec, err := recovery.New(recovery.Config{Interval: 50 * time.Millisecond, ListEvery: 50 * time.Millisecond,
		CatchUpTimeout: 20 * time.Second, BusinessLines: []string{bl}}, rdb, pg, g, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := rec.Once(ctx); done <- err }()
	<-g.Entered
	// Fenced. Another campaign in the set makes "this Redis holds campaigns" true: the
	// fence's token alone must give 503.
	if err := rdb.SAdd(ctx, rkeys.Campaigns, testenv.ID(t, "other")).Err(); err != nil {
		t.Fatal(err)
	}
	c.Forget(cmp)
	unavailable("fenced, rebuild waiting", "u3")
	nope := req(testenv.ID(t, "nope"), "rp-50", "u4", "r4")
	if err := e.do(c, nope); err != nil || nope.Code != claim.CodeUnknownCampaign {
		t.Fatalf("a campaign that exists nowhere: %s %v; want unknown_campaign", reason(nope.Code), err)
	}
	close(g.Open)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "rebuilt: claims accepted again", func() bool {
		r := req(cmp, "rp-50", "u5", "r5")
		return e.do(c, r) == nil && r.Code == claim.CodeAccepted
	})
}
