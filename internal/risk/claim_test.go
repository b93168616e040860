package risk_test

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/gateway/claimer/claimertest"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/risk/decisionlog"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/scripts"
)

func reason(code int) string { return risk.ReasonOf(code) }

func hget(t *testing.T, e *testenv.Env, key, field string) int64 {
	t.Helper()
	v, err := e.RDB.HGet(testenv.Ctx(t, 5*time.Second), key, field).Result()
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

// A bot farm - one device, 500 accounts, claiming at once - gets exactly device.max
// accepted in the window and 429 device_velocity for the rest, each with a true
// retry_after; honest users of the same sale, claiming in between, are untouched.
func TestBotFarmOneDevice(t *testing.T) {
	e := testenv.New(t)
	camp := e.StockCampaign(10_000, 1)
	const max = 5
	e.SetRules(camp, "device.max=5", "device.window=1h")
	rec := &testenv.Recorder{}
	c := claimertest.New(e, rec)

	type res struct {
		honest bool
		o      claimer.Outcome
	}
	results := make(chan res, 600)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range 500 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results <- res{o: claimertest.Claim(t, c, camp, fmt.Sprintf("bot-%d", i), "farm-device", "10.9.9.9")}
		}()
		go func() {
			defer wg.Done()
			if i%5 != 0 { // 100 honest users interleaved with the farm
				return
			}
			sem <- struct{}{}
			defer func() { <-sem }()
			results <- res{honest: true, o: claimertest.Claim(t, c, camp, fmt.Sprintf("honest-%d", i), fmt.Sprintf("phone-%d", i), fmt.Sprintf("10.1.%d.%d", i/250, i%250))}
		}()
	}
	wg.Wait()
	close(results)
	got := map[string]int{}
	honest := map[string]int{}
	for r := range results {
		if r.honest {
			honest[reason(r.o.Code)]++
			continue
		}
		got[reason(r.o.Code)]++
		if r.o.Code == claim.CodeDeviceVelocity {
			if r.o.RetryAfterMs <= 0 || r.o.RetryAfterMs > time.Hour.Milliseconds() {
				t.Errorf("device_velocity with retry_after_ms=%d, want 1..3600000", r.o.RetryAfterMs)
			}
			if r.o.Risk.Device < max || r.o.Risk.Flags&risk.DeviceVelocity == 0 {
				t.Errorf("device_velocity saw device=%d flags=%b", r.o.Risk.Device, r.o.Risk.Flags)
			}
		}
	}
	if got["accepted"] != max || got["device_velocity"] != 500-max || len(got) != 2 {
		t.Errorf("farm: got %v; want %d accepted and %d device_velocity", got, max, 500-max)
	}
	if honest["accepted"] != 100 || len(honest) != 1 {
		t.Errorf("honest users: got %v; want all 100 accepted", honest)
	}
	// A rejected claim took nothing: stock went down by exactly the accepted claims.
	if left := hget(t, e, rkeys.SKU(camp, "rp-50"), "stock"); left != 10_000-max-100 {
		t.Errorf("stock left %d, want %d", left, 10_000-max-100)
	}
	if n := hget(t, e, rkeys.Rejections(camp), strconv.Itoa(claim.CodeDeviceVelocity)); n != 500-max {
		t.Errorf("rejections[device_velocity]=%d, want %d", n, 500-max)
	}
	// Every decision was recorded, with what the rules saw.
	if n := len(rec.Decisions(camp)); n != 600 {
		t.Errorf("%d decisions recorded, want 600", n)
	}
	// A risk rejection is not remembered: the same request retried is decided again
	// (and is still over the limit).
	r := &claimer.Request{RequestID: testenv.ID(t, "rq"), CampaignID: camp, SKU: "rp-50", UserID: "bot-x", DeviceID: "farm-device", IP: "10.9.9.9"}
	for i := range 2 {
		if err := c.Do(testenv.Ctx(t, 10*time.Second), r); err != nil {
			t.Fatal(err)
		}
		if r.Code != claim.CodeDeviceVelocity || r.Replayed {
			t.Errorf("attempt %d of one request: %s replayed=%v, want device_velocity decided anew", i, reason(r.Code), r.Replayed)
		}
	}
}

// A burst that straddles a window boundary never gets more than max through in any
// window (a fixed window would let 2*max through around its boundary), and the
// retry_after_ms of a 429 is exactly when the next claim passes.
func TestSlidingWindowBoundary(t *testing.T) {
	e := testenv.New(t)
	camp := e.StockCampaign(10_000, 1)
	const max, window = 3, 1000
	e.SetRules(camp, "device.max=3", "device.window=1s")
	c := claimertest.New(e, nil)

	var accepted []int64 // Redis times of accepted claims
	var lastRetry claimer.Outcome
	deadline := time.Now().Add(3500 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		o := claimertest.Claim(t, c, camp, fmt.Sprintf("u-%d", i), "dev-burst", "10.2.2.2")
		switch o.Code {
		case claim.CodeAccepted:
			accepted = append(accepted, o.ClaimedAtMs)
		case claim.CodeDeviceVelocity:
			lastRetry = o
			// The slot frees when the max-th newest accepted claim leaves the window.
			if n := len(accepted); n >= max {
				want := accepted[n-max] + window - o.DecidedAtMs
				if o.RetryAfterMs != want {
					t.Fatalf("retry_after_ms=%d, want %d (accepted at %v, decided at %d)", o.RetryAfterMs, want, accepted[n-max:], o.DecidedAtMs)
				}
			}
		default:
			t.Fatalf("claim %d: %s", i, reason(o.Code))
		}
		time.Sleep(7 * time.Millisecond)
	}
	sort.Slice(accepted, func(i, j int) bool { return accepted[i] < accepted[j] })
	for i := range accepted {
		in := 0
		for j := i; j >= 0 && accepted[j] > accepted[i]-window; j-- {
			in++
		}
		if in > max {
			t.Fatalf("%d accepted within one %dms window ending at %d: %v", in, window, accepted[i], accepted)
		}
	}
	// Three and a half windows of continuous claiming: the window slid at least 3 times.
	if len(accepted) < 3*max {
		t.Errorf("only %d accepted over 3.5 windows, want at least %d", len(accepted), 3*max)
	}
	if lastRetry.Code == 0 {
		t.Fatal("no claim was rejected")
	}

	// Honour one retry_after_ms exactly: rejected until then, accepted once it passed.
	var o claimer.Outcome
	for o = claimertest.Claim(t, c, camp, "u-wait-0", "dev-burst", "10.2.2.2"); o.Code == claim.CodeAccepted; o = claimertest.Claim(t, c, camp, testenv.ID(t, "u"), "dev-burst", "10.2.2.2") {
	}
	if o.Code != claim.CodeDeviceVelocity {
		t.Fatalf("got %s, want device_velocity", reason(o.Code))
	}
	time.Sleep(time.Duration(o.RetryAfterMs)*time.Millisecond + 5*time.Millisecond)
	if o2 := claimertest.Claim(t, c, camp, "u-waited", "dev-burst", "10.2.2.2"); o2.Code != claim.CodeAccepted {
		t.Errorf("after waiting retry_after_ms=%d: %s (retry %d), want accepted", o.RetryAfterMs, reason(o2.Code), o2.RetryAfterMs)
	}
}

// Rejected claims never consume another rule's quota: claims rejected by the IP limit
// do not count against the device or the user, and business rejections (user_limit) do
// not count either.
func TestRejectedClaimsConsumeNoQuota(t *testing.T) {
	e := testenv.New(t)
	camp := e.StockCampaign(10_000, 1)
	e.SetRules(camp, "device.max=2", "device.window=1h", "ip.max=1", "ip.window=1h")
	c := claimertest.New(e, nil)

	if o := claimertest.Claim(t, c, camp, "u1", "dev-q", "10.3.0.1"); o.Code != claim.CodeAccepted {
		t.Fatalf("first: %s", reason(o.Code))
	}
	// Same IP: rejected by the IP rule 5 times; the device's window must not grow.
	for i := range 5 {
		if o := claimertest.Claim(t, c, camp, fmt.Sprintf("u-ip-%d", i), "dev-q", "10.3.0.1"); o.Code != claim.CodeIPVelocity {
			t.Fatalf("same ip: %s, want ip_velocity", reason(o.Code))
		}
	}
	// The same user again: user_limit (a business rejection) - not counted either.
	if o := claimertest.Claim(t, c, camp, "u1", "dev-q", "10.3.0.2"); o.Code != claim.CodeUserLimit {
		t.Fatalf("same user: %s, want user_limit", reason(o.Code))
	}
	// A new IP: the device has used 1 of 2, so this one passes.
	o := claimertest.Claim(t, c, camp, "u2", "dev-q", "10.3.0.3")
	if o.Code != claim.CodeAccepted || o.Risk.Device != 1 || o.Risk.IP != 0 {
		t.Fatalf("new ip: %s saw device=%d ip=%d, want accepted with device=1 ip=0", reason(o.Code), o.Risk.Device, o.Risk.IP)
	}
	if o := claimertest.Claim(t, c, camp, "u3", "dev-q", "10.3.0.4"); o.Code != claim.CodeDeviceVelocity {
		t.Fatalf("third on the device: %s, want device_velocity", reason(o.Code))
	}
}

// Shadow mode lets every claim through and records every would-be rejection: in the
// decision log on flash.decisions (read back from the broker) and in the campaign's
// shadow counts; nothing is counted as a real rejection.
func TestShadowMode(t *testing.T) {
	e := testenv.New(t)
	camp := e.StockCampaign(10_000, 1)
	e.SetRules(camp, "device.max=2", "device.window=1h", "shadow=on")
	blockedUser := testenv.ID(t, "u-blocked")
	ctx := testenv.Ctx(t, 60*time.Second)
	if err := e.RDB.Set(ctx, rkeys.Block(rkeys.KindUser, blockedUser), risk.EncodeEntry("test", "t", time.Now()), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Second).UnixMilli()
	dl, err := decisionlog.New(decisionlog.Config{Brokers: testenv.Brokers(), Linger: time.Millisecond}, nil, testenv.Quiet)
	if err != nil {
		t.Fatal(err)
	}
	c := claimertest.New(e, dl)
	for i := range 10 {
		user := fmt.Sprintf("u-%d", i)
		if i == 9 {
			user = blockedUser
		}
		if o := claimertest.Claim(t, c, camp, user, "dev-shadow", "10.4.4.4"); o.Code != claim.CodeAccepted {
			t.Fatalf("claim %d in shadow mode: %s", i, reason(o.Code))
		}
	}
	dl.Close(ctx)

	if n := hget(t, e, rkeys.ShadowRejections(camp), strconv.Itoa(claim.CodeDeviceVelocity)); n != 7 {
		t.Errorf("shadow device_velocity=%d, want 7", n)
	}
	if n := hget(t, e, rkeys.ShadowRejections(camp), strconv.Itoa(claim.CodeBlocked)); n != 1 {
		t.Errorf("shadow blocked=%d, want 1", n)
	}
	if n, _ := e.RDB.HLen(ctx, rkeys.Rejections(camp)).Result(); n != 0 {
		t.Errorf("%d real rejection reasons counted in shadow mode, want none", n)
	}
	entries, _, err := decisionlog.Read(ctx, testenv.Brokers(), "", start, camp)
	if err != nil {
		t.Fatal(err)
	}
	var mine []risk.Decision
	for _, en := range entries {
		if en.CampaignID == camp {
			mine = append(mine, en.Decision)
		}
	}
	if len(mine) != 10 {
		t.Fatalf("%d decisions of the campaign on flash.decisions, want 10", len(mine))
	}
	would := 0
	for i, d := range mine {
		if !d.Accepted() || d.Seen.Flags&risk.ShadowMode == 0 {
			t.Errorf("decision %d: %s shadow=%v, want accepted in shadow mode", i, d.Result(), d.Seen.Flags&risk.ShadowMode != 0)
		}
		if d.Seen.Flags&risk.Hits != 0 {
			would++
		}
		if d.Seen.Device != int64(i) {
			t.Errorf("decision %d saw device count %d, want %d", i, d.Seen.Device, i)
		}
	}
	if would != 8 { // 7 over the device limit + the blocked user (who is also over it)
		t.Errorf("%d decisions with would-be rejections, want 8", would)
	}
	if f := mine[9].Seen.Flags; f&risk.BlockedUser == 0 || f&risk.DeviceVelocity == 0 {
		t.Errorf("last decision hits %v, want blocked_user and device_velocity", f.HitNames())
	}
}

// The freeze rule: a device with more than freeze.max accepted claims across campaigns
// within freeze.window is frozen: the claim that crosses the line is accepted (it is the
// evidence), every later one gets 403 blocked, in every campaign.
func TestAutoFreezeAcrossCampaigns(t *testing.T) {
	e := testenv.New(t)
	a, b := e.StockCampaign(100, 10), e.StockCampaign(100, 10)
	for _, camp := range []string{a, b} {
		e.SetRules(camp, "freeze.max=3", "freeze.window=1h", "freeze.for=1h")
	}
	c := claimertest.New(e, nil)
	dev := testenv.ID(t, "dev-frz")
	for i, camp := range []string{a, b, a, b} {
		o := claimertest.Claim(t, c, camp, testenv.ID(t, "u"), dev, "10.5.5.5")
		if o.Code != claim.CodeAccepted {
			t.Fatalf("claim %d: %s, want accepted", i, reason(o.Code))
		}
		if froze := o.Risk.Flags&risk.FrozeDevice != 0; froze != (i == 3) {
			t.Errorf("claim %d froze=%v (saw %d)", i, froze, o.Risk.FreezeDevice)
		}
	}
	for _, camp := range []string{a, b} {
		o := claimertest.Claim(t, c, camp, testenv.ID(t, "u"), dev, "10.5.5.6")
		if o.Code != claim.CodeBlocked || o.Risk.Flags&risk.FrozenDevice == 0 {
			t.Errorf("after the freeze in %s: %s hits %v, want blocked by frozen_device", camp, reason(o.Code), o.Risk.Flags.HitNames())
		}
	}
	ctx := testenv.Ctx(t, 5*time.Second)
	en, ok, err := risk.ReadEntry(ctx, e.RDB, risk.Device, dev, true)
	if err != nil || !ok {
		t.Fatalf("freeze entry: ok=%v err=%v", ok, err)
	}
	if en.ExpiresAt.IsZero() || time.Until(en.ExpiresAt) > time.Hour || en.Actor != "claim.lua" {
		t.Errorf("freeze entry %+v, want an expiry within the hour set by claim.lua", en)
	}
}

// claim.lua has one layout: the old 9-key base layout (no risk checks) that test
// fixtures used is refused with an error naming the layout, and takes nothing.
func TestOldBaseLayoutRefused(t *testing.T) {
	e := testenv.New(t)
	camp := e.StockCampaign(10, 1)
	ctx := testenv.Ctx(t, 10*time.Second)
	bl, _ := e.RDB.HGet(ctx, rkeys.Meta(camp), "bl").Result()
	before := e.RDB.HGet(ctx, rkeys.SKU(camp, "rp-50"), "stock").Val()
	keys := []string{rkeys.Meta(camp), rkeys.SKU(camp, "rp-50"), rkeys.Request(camp, "r0"), rkeys.Users(camp),
		rkeys.BusinessLine(bl), rkeys.Outbox(camp), rkeys.Inflight(camp), rkeys.Rejections(camp), rkeys.Meta(camp)}
	_, err := scripts.Claim.Run(ctx, e.RDB, keys, 1, 1000, 1000, "r0", camp+".x0", camp, "rp-50", "u0", "dev", "1.1.1.1").Slice()
	if err == nil || !strings.Contains(err.Error(), "9 keys for 1 claims, want 26 per claim") {
		t.Fatalf("base layout: err %v; want the layout named", err)
	}
	if after := e.RDB.HGet(ctx, rkeys.SKU(camp, "rp-50"), "stock").Val(); after != before || e.RDB.Exists(ctx, rkeys.Request(camp, "r0")).Val() != 0 {
		t.Fatalf("a refused batch took stock (%s -> %s) or left a record", before, after)
	}
}

var _ = context.Background
