package main

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/gateway/claimer/claimertest"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// settledNow is the recoverer's wait for the settler: nothing of the test is in Kafka.
type settledNow struct{}

func (settledNow) Wait(context.Context) error { return nil }

// Issue 21.4: risk state survives Redis losing its data. A device blocked with riskctl
// and a campaign's device rule are recorded in Postgres; after FLUSHALL no claim is
// decided until recovery rebuilt them (NOT_WARM, nothing taken), then the blocked
// device is refused, the rule is back, the lifted block stays lifted - also one lifted
// after the first loss, through a second loss.
func TestRiskStateSurvivesRedisLoss(t *testing.T) {
	e := testenv.Private(t)
	ctx := testenv.Ctx(t, 2*time.Minute)
	camp := e.StockCampaign(100, 100)
	var bl string
	if err := e.PG.QueryRow(ctx, `SELECT business_line FROM campaigns WHERE id = $1`, camp).Scan(&bl); err != nil {
		t.Fatal(err)
	}
	if warm, err := e.RDB.HGet(ctx, rkeys.RiskGlobalRules, risk.FieldWarm).Result(); err != nil || warm == "" {
		t.Fatalf("the campaign's warm wrote no risk-state marker on a fresh Redis: %q, %v", warm, err)
	}
	conn := []string{"--redis", e.RDB.Options().Addr, "--pg", testenv.PGURL(), "--actor", "risk-team"}
	rc := func(args ...string) string { t.Helper(); return mustRiskctl(t, append(args, conn...)...) }
	blocked, lifted, later, ok := testenv.ID(t, "dev"), testenv.ID(t, "dev"), testenv.ID(t, "dev"), testenv.ID(t, "dev")
	rc("rules", "set", "--campaign", camp, "device.max=2", "device.window=1h")
	rc("block", "device", blocked, "--reason", "emulator farm", "--ttl", "1h")
	rc("block", "device", lifted, "--reason", "mistake", "--ttl", "1h")
	rc("unblock", "device", lifted)
	rc("block", "device", later, "--reason", "lifted after the loss", "--ttl", "1h")
	rules0, err := e.RDB.HGetAll(ctx, rkeys.RiskRules(camp)).Result()
	if err != nil || len(rules0) != 2 {
		t.Fatalf("campaign rules before the loss: %v, %v", rules0, err)
	}

	c := claimertest.New(e, nil)
	// claim answers the script's code; a 503 (NOT_WARM) must have left no idempotency
	// record: nothing remembered, the retry is decided anew.
	claimDev := func(dev string) int {
		t.Helper()
		r := &claimer.Request{RequestID: testenv.ID(t, "rq"), CampaignID: camp, SKU: "rp-50",
			UserID: testenv.ID(t, "u"), DeviceID: dev, IP: "10.9.0.1"}
		err := c.Do(ctx, r)
		if err != nil && !(errors.Is(err, claimer.ErrUnavailable) && r.Code == claim.CodeNotWarm) {
			t.Fatalf("claim of device %s: %v", dev, err)
		}
		if r.Code == claim.CodeNotWarm {
			if n := e.RDB.Exists(ctx, rkeys.Request(camp, r.RequestID)).Val(); n != 0 {
				t.Fatalf("a NOT_WARM claim left its idempotency record")
			}
		}
		return r.Code
	}
	if got := claimDev(blocked); got != claim.CodeBlocked {
		t.Fatalf("blocked device before the loss: code %d", got)
	}
	if got := claimDev(lifted); got != claim.CodeAccepted {
		t.Fatalf("unblocked device before the loss: code %d", got)
	}

	rec, err := recovery.New(recovery.Config{BusinessLines: []string{bl}}, e.RDB, e.PG, settledNow{}, testenv.Quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	stock := func() string {
		t.Helper()
		s, err := e.RDB.HGet(ctx, rkeys.SKU(camp, "rp-50"), "stock").Result()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	lose := func() {
		t.Helper()
		if err := e.RDB.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		// The campaign's counters come back first (its business line alone): the risk
		// state is still missing, so nothing may be decided on it.
		if _, err := rec.RecoverBusinessLine(ctx, bl); err != nil {
			t.Fatal(err)
		}
		before := stock()
		for _, dev := range []string{blocked, ok} {
			if got := claimDev(dev); got != claim.CodeNotWarm {
				t.Fatalf("device %s between the loss and the risk rebuild: code %d, want NOT_WARM (%d)", dev, got, claim.CodeNotWarm)
			}
		}
		if after := stock(); after != before {
			t.Fatalf("NOT_WARM took stock: %s -> %s", before, after)
		}
		if _, err := rec.Once(ctx); err != nil {
			t.Fatal(err)
		}
	}

	lose()
	if got := claimDev(blocked); got != claim.CodeBlocked {
		t.Fatalf("blocked device after the rebuild: code %d, want blocked", got)
	}
	if got := claimDev(lifted); got != claim.CodeAccepted {
		t.Fatalf("device unblocked before the loss, after the rebuild: code %d, want accepted", got)
	}
	if rules1, err := e.RDB.HGetAll(ctx, rkeys.RiskRules(camp)).Result(); err != nil || !equalMaps(rules0, rules1) {
		t.Fatalf("campaign rules after the rebuild: %v (%v), want %v", rules1, err, rules0)
	}
	// The rule is enforced again: the device's third accepted claim in the hour is refused.
	for i, want := range []int{claim.CodeAccepted, claim.CodeAccepted, claim.CodeDeviceVelocity} {
		if got := claimDev(ok); got != want {
			t.Fatalf("claim %d of a device under device.max=2: code %d, want %d", i+1, got, want)
		}
	}
	// The audit and the state agree: block list (Redis) shows what the record holds.
	var list struct {
		Entries []entryView `json:"entries"`
	}
	if err := json.Unmarshal([]byte(rc("block", "list", "device", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	listed := map[string]string{}
	for _, v := range list.Entries {
		listed[v.Value] = v.Reason
	}
	if listed[blocked] != "emulator farm" || listed[later] == "" || listed[lifted] != "" {
		t.Fatalf("block list after the rebuild: %v", listed)
	}

	// An unblock after the loss is kept through the next one.
	rc("unblock", "device", later)
	lose()
	if got := claimDev(later); got != claim.CodeAccepted {
		t.Fatalf("device unblocked after the first loss, after the second: code %d, want accepted", got)
	}
	if got := claimDev(blocked); got != claim.CodeBlocked {
		t.Fatalf("blocked device after the second loss: code %d", got)
	}
	var state string
	if err := e.PG.QueryRow(ctx, `SELECT state::text FROM risk_state WHERE scope = $1`, "device:"+later).Scan(&state); err != nil || state != "{}" {
		t.Fatalf("risk_state of the lifted device: %q, %v", state, err)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
