package recovery_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/risk/riskstate"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// TestRecoverPushEscrows: after Redis lost everything, the rebuild writes every push
// escrow back from the books before it lifts the fence: a running push holds, per SKU,
// its users after the cursor whose claim on the push's channel is not a row (and their
// face value); a push that is over is marked so (a late hold is told it was released);
// the SKUs' and the campaign's held are their sum. An app claim then finds the units the
// push still needs taken (sold_out), as it would have before the loss.
func TestRecoverPushEscrows(t *testing.T) {
	base := testenv.New(t)
	ctx := testenv.Ctx(t, 90*time.Second)
	pr := startPrivateRedis(t)
	e := base.With(pr.client())
	c := e.Campaign(testenv.Spec{SKUs: []testenv.SKU{{SKU: "a", Stock: 3, Value: 50}, {SKU: "b", Stock: 10, Value: 9}}})
	st := testenv.NewSettler(t, e.RDB, e.PG, c.ID)

	// Push p1 is running with its cursor at u-03: u-00..u-09, even users SKU a, odd b;
	// u-04's claim (after the cursor: a batch durable before its cursor was written) is
	// a row. Push p0 is done.
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO pushes (campaign_id, push_id, tiers, digest, nonce, state, total, cursor_user)
			VALUES ($1, 'p0', '[]', 'd0', 'n0', 'done', 0, ''), ($1, 'p1', '[]', 'd1', 'n1', 'running', 10, 'u-03')`, []any{c.ID}},
		{`INSERT INTO push_users (campaign_id, push_id, user_id, sku)
			SELECT $1, 'p1', 'u-0' || i, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(0, 9) i`, []any{c.ID}},
		{`INSERT INTO claims (claim_id, request_id, campaign_id, business_line, sku, user_id, device_id, ip, value,
			claimed_at, expires_at, kafka_partition, kafka_offset, channel)
			VALUES ($1 || '-c4', 'push-rq4', $1, $2, 'a', 'u-04', 'push', '0.0.0.0', 50, now(), now() + interval '1 day', 0, 0, 'push:p1')`,
			[]any{c.ID, c.BusinessLine}},
	} {
		if _, err := e.PG.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	// The database is shared: a running push left behind would be picked up by every
	// push runner of other tests (on a Redis that does not know the campaign).
	t.Cleanup(func() {
		_, _ = e.PG.Exec(testenv.Ctx(t, 10*time.Second), `UPDATE pushes SET state = 'done' WHERE campaign_id = $1`, c.ID)
	})
	if err := e.RDB.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	st.Start()
	rec := newRecoverer(t, e.RDB, e, c.BusinessLine, &recovery.KafkaCatchUp{Client: adminClient(t), Group: st.Group, Topic: kafkaopt.ClaimsTopic})
	if _, err := rec.RecoverBusinessLine(ctx, c.BusinessLine); err != nil {
		t.Fatal(err)
	}
	esc, err := e.RDB.HGetAll(ctx, rkeys.Pushes(c.ID)).Result()
	if err != nil {
		t.Fatal(err)
	}
	// After the cursor: a u-06 u-08 (u-04 is a row), b u-05 u-07 u-09.
	want := map[string]string{"st:p0": "2", "b:p0": "0", "st:p1": "1", "b:p1": fmt.Sprint(2*50 + 3*9),
		"u:p1:a": "2", "u:p1:b": "3"}
	for f, v := range want {
		if esc[f] != v {
			t.Errorf("escrow %s = %q, want %q (escrow %v)", f, esc[f], v, esc)
		}
	}
	for key, v := range map[string]string{rkeys.SKU(c.ID, "a"): "2", rkeys.SKU(c.ID, "b"): "3", rkeys.Meta(c.ID): fmt.Sprint(2*50 + 3*9)} {
		if got, _ := e.RDB.HGet(ctx, key, "held").Result(); got != v {
			t.Errorf("%s held = %q, want %q", key, got, v)
		}
	}
	// SKU a: stock 3, one row, two units held for the push: nothing is free for an app
	// claim. SKU b has free units. (The risk state first, as a recovery pass does.)
	runID, err := recovery.RunID(ctx, e.RDB)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := riskstate.Ensure(ctx, e.PG, e.RDB, runID); err != nil {
		t.Fatal(err)
	}
	if a := try(t, e.RDB, c, "a", "app-user", "rq-app-a"); a.Code != claim.CodeSoldOut {
		t.Errorf("app claim of a after the rebuild: code %d, want sold_out (%d): the push's units are held", a.Code, claim.CodeSoldOut)
	}
	if a := try(t, e.RDB, c, "b", "app-user-2", "rq-app-b"); a.Code != claim.CodeAccepted {
		t.Errorf("app claim of b after the rebuild: code %d, want accepted", a.Code)
	}
}
