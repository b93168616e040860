package load

import (
	"testing"

	"github.com/flashgate/flashgate/bench/traffic"
)

// The wire check follows DESIGN.md "Which rejections are remembered": a retry after
// sold_out, not_started, paused or a risk answer may be decided differently (a unit came
// back and the user got one elsewhere: user_limit; or it is accepted), in either order of
// arrival, while a remembered answer (200, user_limit, budget_exhausted, ...) must be
// what every retry gets.
func TestReplayCheckKnowsWhatIsRemembered(t *testing.T) {
	type ans struct {
		status int
		reason string
		claim  string
	}
	for _, tc := range []struct {
		name     string
		answers  []ans
		mismatch int64
	}{
		{"sold_out then user_limit", []ans{{409, "sold_out", ""}, {409, "user_limit", ""}}, 0},
		{"user_limit then sold_out (arrived out of order)", []ans{{409, "user_limit", ""}, {409, "sold_out", ""}}, 0},
		{"sold_out then accepted", []ans{{409, "sold_out", ""}, {200, "", "c1"}}, 0},
		{"not_started then accepted then replayed", []ans{{409, "not_started", ""}, {200, "", "c1"}, {200, "", "c1"}}, 0},
		{"429 then accepted", []ans{{429, "device_velocity", ""}, {200, "", "c1"}}, 0},
		{"sold_out, accepted, then another claim", []ans{{409, "sold_out", ""}, {200, "", "c1"}, {200, "", "c2"}}, 1},
		{"accepted then another claim", []ans{{200, "", "c1"}, {200, "", "c2"}}, 1},
		{"user_limit then accepted", []ans{{409, "user_limit", ""}, {200, "", "c1"}}, 1},
		{"budget_exhausted then ended", []ans{{409, "budget_exhausted", ""}, {409, "ended", ""}}, 1},
	} {
		r := &recorder{answers: make([]firstAnswer, answerRing)}
		orig := &traffic.Request{Seq: 7, RequestID: "rq-7"}
		for i, a := range tc.answers {
			req := orig
			if i > 0 {
				req = &traffic.Request{Seq: uint64(100 + i), Kind: traffic.Retry, Orig: 7, RequestID: "rq-7"}
			}
			r.checkReplay(&answer{job: job{req: req}, status: a.status, reason: a.reason, claimID: a.claim})
		}
		if r.res.ReplayMismatches != tc.mismatch {
			t.Errorf("%s: %d mismatches, want %d (%v)", tc.name, r.res.ReplayMismatches, tc.mismatch, r.res.Violations)
		}
	}
}
