package recovery_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// A kick starts a detection pass now, not at the next Interval: the gateway kicks when a
// claim answers NOT_WARM (a campaign stamped with another Redis run id), so recovery
// starts at once. Seen here by a pass's side effect: an unstamped campaign is stamped.
func TestKickRunsAPassNow(t *testing.T) {
	e := testenv.New(t)
	bl := e.BusinessLine(1_000_000_000)
	c := e.Campaign(testenv.Spec{BusinessLine: bl})
	rec, err := recovery.New(recovery.Config{Interval: time.Hour, ListEvery: time.Hour,
		CatchUpTimeout: 10 * time.Second, BusinessLines: []string{bl}}, e.RDB, e.PG, newOpenGate(), quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	kick := recovery.NewKick()
	done := make(chan struct{})
	go func() { defer close(done); _ = rec.RunWithKicks(ctx, kick) }()
	t.Cleanup(func() { cancel(); <-done })

	stamped := func() bool { return e.RDB.HExists(context.Background(), rkeys.Meta(c.ID), rkeys.FieldRunID).Val() }
	testenv.Eventually(t, 5*time.Second, "the first pass leaves the campaign stamped", stamped)
	time.Sleep(200 * time.Millisecond) // the first pass is over
	if err := e.RDB.HDel(context.Background(), rkeys.Meta(c.ID), rkeys.FieldRunID).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if stamped() {
		t.Fatal("a pass ran without a kick (Interval is an hour)")
	}
	for range 100 { // kicks never block, and are merged
		kick.Now()
	}
	testenv.Eventually(t, 3*time.Second, "a kicked pass stamps the campaign again", stamped)
}
