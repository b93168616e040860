package load

import (
	"testing"
	"time"

	"github.com/flashgate/flashgate/bench/traffic"
)

// The generator's lag budget follows the objective it serves (issue 19): a quarter of
// the tightest latency bound, 10ms without one; a ramp takes it when none is given, and
// one given explicitly stays.
func TestLagBudgetFollowsTheObjective(t *testing.T) {
	for _, tc := range []struct {
		slo  string
		want time.Duration
	}{
		{"p99=10ms", 2500 * time.Microsecond},
		{"p99=10ms,max=1s", 2500 * time.Microsecond},
		{"p50=2ms,p99=10ms", 500 * time.Microsecond},
		{"p99.9=200ms", 50 * time.Millisecond},
	} {
		bounds, err := ParseSLO(tc.slo)
		if err != nil {
			t.Fatal(err)
		}
		if got := (Objective{Bounds: bounds}).LagBudget(); got != tc.want {
			t.Errorf("%s: lag budget %s, want %s", tc.slo, got, tc.want)
		}
	}
	if got := (Objective{ErrorBudget: 0.01}).LagBudget(); got != 10*time.Millisecond {
		t.Errorf("no latency bound: lag budget %s, want 10ms", got)
	}

	bounds, _ := ParseSLO("p99=10ms")
	rc := RampConfig{Start: 100, MaxRate: 1000, Step: Step{Factor: 2}, Objective: Objective{Bounds: bounds},
		Run: Config{Target: "http://127.0.0.1:1", Traffic: traffic.Config{Campaign: "c-test", SKUs: []string{"rp-50"}, Users: 10, Seed: 1}}}
	if err := rc.validate(); err != nil {
		t.Fatal(err)
	}
	if rc.Run.LagBudget != 2500*time.Microsecond {
		t.Errorf("ramp without a lag budget took %s, want the objective's 2.5ms", rc.Run.LagBudget)
	}
	rc.Run.LagBudget = 7 * time.Millisecond
	if err := rc.validate(); err != nil {
		t.Fatal(err)
	}
	if rc.Run.LagBudget != 7*time.Millisecond {
		t.Errorf("ramp with --lag-budget 7ms ran with %s", rc.Run.LagBudget)
	}
}
