package claimer_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// An early tap is not locked out (issue 21.6): a request_id answered not_started 1 s
// before the opening is accepted when retried after it, and one answered paused is
// accepted after the resume. Neither rejection leaves an idempotency record. Both go
// through claim.lua and through the short-circuit (the second claimer has a clock
// estimate and answers not_started locally).
func TestEarlyTapNotLockedOut(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"script", "short-circuit"} {
		t.Run(name, func(t *testing.T) {
			cfg := claimer.Config{DisableShortCircuit: name == "script"}
			c := e.liveClaimer(cfg)
			ctx := context.Background()
			cmp := e.campaign("", campaignSpec{start: 1500 * time.Millisecond})
			opens := time.Now().Add(1500 * time.Millisecond)
			if name == "short-circuit" {
				// Give the claimer its estimate of the Redis clock (one script call).
				e.expect(c, req(cmp, "rp-50", "u-warm", "rq-warm"), claim.CodeNotStarted, true)
			}
			tap := req(cmp, "rp-50", "u1", "rq-early")
			if err := e.do(c, tap); err != nil || tap.Code != claim.CodeNotStarted {
				t.Fatalf("tap before the opening: %s %v, want not_started", reason(tap.Code), err)
			}
			if n := e.rdb.Exists(ctx, rkeys.Request(cmp, "rq-early")).Val(); n != 0 {
				t.Fatalf("not_started left an idempotency record: %q", e.rdb.Get(ctx, rkeys.Request(cmp, "rq-early")).Val())
			}
			time.Sleep(time.Until(opens) + 100*time.Millisecond)
			again := req(cmp, "rp-50", "u1", "rq-early")
			if err := e.do(c, again); err != nil || again.Code != claim.CodeAccepted || again.Replayed {
				t.Fatalf("same request_id after the opening: %s replayed=%v %v, want a fresh acceptance", reason(again.Code), again.Replayed, err)
			}

			// Paused, then resumed: the paused answer is not replayed either.
			if err := e.cat.SetPaused(ctx, cmp, true); err != nil {
				t.Fatal(err)
			}
			p := req(cmp, "rp-50", "u2", "rq-paused")
			if err := e.do(c, p); err != nil || p.Code != claim.CodePaused {
				t.Fatalf("claim while paused: %s %v", reason(p.Code), err)
			}
			if n := e.rdb.Exists(ctx, rkeys.Request(cmp, "rq-paused")).Val(); n != 0 {
				t.Fatal("paused left an idempotency record")
			}
			if err := e.cat.SetPaused(ctx, cmp, false); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 5*time.Second, "the resume is seen", func() bool {
				r := req(cmp, "rp-50", "u2", "rq-paused")
				return e.do(c, r) == nil && r.Code == claim.CodeAccepted && !r.Replayed
			})
		})
	}
}
