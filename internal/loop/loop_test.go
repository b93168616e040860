package loop

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// A pass runs at once, again at once while it says more is waiting, and interval apart
// otherwise - after a failed pass too, which is reported; Every returns nil when ctx
// ends, even mid-wait.
func TestEvery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var passes, failures atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- Every(ctx, time.Hour, func(context.Context) (bool, error) {
			if passes.Add(1) < 3 {
				return true, nil // a full batch: the next pass at once
			}
			return true, errors.New("boom") // failed: reported, then the interval
		}, func(error) { failures.Add(1) })
	}()
	deadline := time.Now().Add(5 * time.Second)
	for passes.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a fourth pass now would mean no wait after a failure
	if p, f := passes.Load(), failures.Load(); p != 3 || f != 1 {
		t.Fatalf("passes %d, failures %d; want 3 passes (two at once, then a failed one) and 1 failure", p, f)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Every returned %v after ctx ended; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Every did not return within 5s of ctx ending (it was waiting out the interval)")
	}
}
