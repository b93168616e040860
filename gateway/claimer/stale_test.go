package claimer

import (
	"errors"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// A claim that waited in the queue longer than one Redis timeout (Redis stalled and
// every worker sat out its own call) is answered 503 unrun; the others go on, in order.
func TestDropStale(t *testing.T) {
	c := &Claimer{cfg: Config{RedisTimeout: time.Second}, metrics: NewMetrics(nil)}
	now := time.Now()
	old1 := &pending{queued: now.Add(-2 * time.Second)}
	young1 := &pending{queued: now.Add(-10 * time.Millisecond)}
	old2 := &pending{queued: now.Add(-1500 * time.Millisecond)}
	young2 := &pending{queued: now}
	b := &batch{items: []*pending{old1, young1, old2, young2}}

	fresh := c.dropStale(b)
	if len(fresh) != 2 || fresh[0] != young1 || fresh[1] != young2 {
		t.Fatalf("fresh = %v; want the two young claims in order", fresh)
	}
	for _, p := range []*pending{old1, old2} {
		if !errors.Is(p.err, ErrOverloaded) {
			t.Errorf("stale claim err = %v; want ErrOverloaded", p.err)
		}
	}
	for _, p := range fresh {
		if p.err != nil {
			t.Errorf("young claim err = %v; want none", p.err)
		}
	}
	if len(b.items) != 4 {
		t.Errorf("the batch's items changed: %d; every claim must still be answered", len(b.items))
	}
	var m dto.Metric
	if err := c.metrics.queueExpired.Write(&m); err != nil {
		t.Fatal(err)
	}
	if n := m.GetCounter().GetValue(); n != 2 {
		t.Errorf("queue_expired = %v; want 2", n)
	}
}
