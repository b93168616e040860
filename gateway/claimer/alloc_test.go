package claimer_test

import (
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/testenv"
)

// The allocations per claim below the HTTP handler (whose own path allocates nothing:
// gateway/api/alloc_test.go): the claimer's and its client libraries' - go-redis's
// script call (one per batch, amortised over up to 64 claims) or pipelined SET, and
// franz-go's produce of an accepted claim - counted as the process's heap allocations
// per claim against the real Redis and broker, with 64 claims in flight. The bounds are
// documented upper bounds (DESIGN.md "The path of a claim"), not timings: a change that
// makes the path allocate markedly more per claim fails here.
func TestClientAllocsPerClaim(t *testing.T) {
	testenv.RequireBroker(t)
	e := newEnv(t)
	const n = 3000
	for _, tc := range []struct {
		name  string
		cfg   claimer.Config
		stock int
		want  int
		bound float64
	}{
		// Measured (2 cores, go1.26, go-redis v9.23, franz-go v1.22): about 58, 42 and 10
		// (a few more under -race). Most of it is go-redis boxing each of a claim's 23
		// keys and 7 arguments into the command's []interface{} and decoding its 15
		// results into interfaces; then franz-go's record and promise, the record's JSON,
		// the claim id and request key strings. The short-circuit is one pipelined
		// SET NX GET command per claim.
		{"accepted: script per batch + produce + durable mark", benchConfig(64, true), 1_000_000, claim.CodeAccepted, 80},
		{"sold out decided by claim.lua", benchConfig(64, false), 0, claim.CodeSoldOut, 60},
		{"sold out short-circuited", benchConfig(64, true), 0, claim.CodeSoldOut, 20},
	} {
		c := e.claimerWith(testenv.Brokers(), 10*time.Second, tc.cfg, nil)
		cmp := e.bigCampaign(tc.stock)
		// Warm up: routes, connections, pools, and (for sold out) the claimer's knowledge.
		if _, err := mallocsPerClaim(c, claims(cmp, "warm", 200), tc.want); err != nil {
			t.Fatalf("%s: warm-up: %v", tc.name, err)
		}
		got, err := mallocsPerClaim(c, claims(cmp, "m", n), tc.want)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		t.Logf("%s: %.1f allocations per claim (bound %.0f)", tc.name, got, tc.bound)
		if got > tc.bound {
			t.Errorf("%s: %.1f allocations per claim, above the documented bound of %.0f", tc.name, got, tc.bound)
		}
	}
}
