package events_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/events"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/testenv"
)

// broker is an in-process Kafka-protocol broker with the test's own topic, so the
// shared dev broker's flash.events is not read or written.
func broker(t *testing.T, topic string) (*kgo.Client, *kgo.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	prod, err := kgo.NewClient(kafkaopt.Producer(c.ListenAddrs(), time.Millisecond, 5*time.Second)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	cons, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cons.Close)
	return prod, cons
}

// read polls until want envelopes with keys of prefix arrived (or fails after 10 s);
// rows of other packages sent by the test's publisher are skipped.
func read(t *testing.T, cons *kgo.Client, prefix string, want int) []events.Envelope {
	t.Helper()
	var got []events.Envelope
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := cons.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			var e events.Envelope
			if err := json.Unmarshal(r.Value, &e); err != nil {
				t.Fatalf("record %q: %v", r.Value, err)
			}
			if string(r.Key) != e.Key {
				t.Fatalf("record key %q, envelope key %q", r.Key, e.Key)
			}
			if strings.HasPrefix(e.Key, prefix) {
				got = append(got, e)
			}
		})
	}
	if len(got) != want {
		t.Fatalf("read %d events, want %d", len(got), want)
	}
	return got
}

// read0 counts the prefix's records arriving within a second.
func read0(t *testing.T, cons *kgo.Client, prefix string) int {
	t.Helper()
	n := 0
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	cons.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
		if strings.HasPrefix(string(r.Key), prefix) {
			n++
		}
	})
	return n
}

// unpublished counts this test's rows (by key prefix) not yet marked published.
func unpublished(t *testing.T, prefix string) int {
	t.Helper()
	var n int
	if err := testenv.PG(t).QueryRow(context.Background(),
		`SELECT count(*) FROM events WHERE key LIKE $1 || '%' AND published_at IS NULL`, prefix).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEventsCommitWithTheirChangeAndArePublishedInOrder(t *testing.T) {
	pg := testenv.PG(t)
	ctx := context.Background()
	prefix := fmt.Sprintf("evt-%d-", time.Now().UnixNano())
	topic := "events-" + prefix
	prod, cons := broker(t, topic)
	pub, err := events.NewPublisher(events.Config{Topic: topic, Batch: 2}, pg, prod, slog.Default(), nil)
	if err != nil {
		t.Fatal(err)
	}

	// Committed: three events of two keys. Rolled back: one, which must never appear.
	tx, err := pg.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, typ := range []string{events.Redeemed, events.RolledBack, events.Redeemed} {
		key := prefix + "a"
		if i == 1 {
			key = prefix + "b"
		}
		if err := events.Emit(ctx, tx, typ, key, map[string]any{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	tx, _ = pg.Begin(ctx)
	if err := events.Emit(ctx, tx, events.Expired, prefix+"gone", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	tx.Rollback(ctx)
	if got := unpublished(t, prefix); got != 3 {
		t.Fatalf("%d unpublished rows, want 3 (the rolled-back one must not exist)", got)
	}

	// Batch 2: passes of two rows until this test's three are sent (other packages'
	// rows in the shared table go first, in id order).
	for i := 0; i < 1000 && unpublished(t, prefix) > 0; i++ {
		if _, err := pub.Publish(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := read(t, cons, prefix, 3)
	var ns []int
	for _, e := range got {
		if e.V != events.Version || e.ID == 0 || e.At.IsZero() || !strings.HasPrefix(e.Key, prefix) {
			t.Fatalf("envelope %+v", e)
		}
		var d struct{ N int }
		if err := json.Unmarshal(e.Data, &d); err != nil {
			t.Fatal(err)
		}
		ns = append(ns, d.N)
	}
	if fmt.Sprint(ns) != "[0 1 2]" || got[0].Type != events.Redeemed || got[1].Type != events.RolledBack {
		t.Fatalf("events out of order: %v %+v", ns, got)
	}
	if got[0].ID >= got[1].ID || got[1].ID >= got[2].ID {
		t.Fatalf("ids not increasing: %d %d %d", got[0].ID, got[1].ID, got[2].ID)
	}
	if n := unpublished(t, prefix); n != 0 {
		t.Fatalf("%d rows left unpublished", n)
	}
	if _, err := pub.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	if again := read0(t, cons, prefix); again != 0 {
		t.Fatalf("a later pass sent %d of the rows again", again)
	}
}

// A broker that is down fails the pass and leaves the rows; the next pass with a broker
// sends them. Nothing is marked published that Kafka did not take.
func TestEventsStayWhenTheBrokerIsDown(t *testing.T) {
	pg := testenv.PG(t)
	ctx := context.Background()
	prefix := fmt.Sprintf("evtdown-%d-", time.Now().UnixNano())
	if err := events.Emit(ctx, pg, events.Expired, prefix+"x", map[string]any{"claim": "x"}); err != nil {
		t.Fatal(err)
	}
	dead, err := kgo.NewClient(kafkaopt.Producer([]string{"127.0.0.1:1"}, time.Millisecond, time.Second)...)
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	pub, err := events.NewPublisher(events.Config{Topic: "events-down", Timeout: 300 * time.Millisecond}, pg, dead, slog.Default(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx); err == nil {
		t.Fatal("a pass with no broker reported success")
	}
	if n := unpublished(t, prefix); n != 1 {
		t.Fatalf("%d rows unpublished after a failed pass, want 1", n)
	}
	topic := "events-up-" + prefix
	prod, cons := broker(t, topic)
	up, _ := events.NewPublisher(events.Config{Topic: topic, Batch: 10_000}, pg, prod, slog.Default(), nil)
	for unpublished(t, prefix) > 0 {
		if _, err := up.Publish(ctx); err != nil {
			t.Fatal(err)
		}
	}
	found := false
	deadline := time.Now().Add(10 * time.Second)
	for !found && time.Now().Before(deadline) {
		c, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		cons.PollFetches(c).EachRecord(func(r *kgo.Record) { found = found || string(r.Key) == prefix+"x" })
		cancel()
	}
	if !found {
		t.Fatal("the row left by the failed pass never reached the topic")
	}
}

// Two publishers at once (two settlers) never send a row twice: one holds the lock.
func TestEventsOnePublisherAtATime(t *testing.T) {
	pg := testenv.PG(t)
	ctx := context.Background()
	prefix := fmt.Sprintf("evtpar-%d-", time.Now().UnixNano())
	for i := 0; i < 200; i++ {
		if err := events.Emit(ctx, pg, events.PointsGranted, fmt.Sprintf("%s%d", prefix, i%7), map[string]any{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
	topic := "events-par-" + prefix
	prod, cons := broker(t, topic)
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		pub, _ := events.NewPublisher(events.Config{Topic: topic, Batch: 10}, pg, prod, slog.Default(), nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 400 && unpublished(t, prefix) > 0; i++ {
				if _, err := pub.Publish(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := unpublished(t, prefix); n != 0 {
		t.Fatalf("%d rows left", n)
	}
	seen := map[int64]bool{}
	last := map[string]int64{}
	deadline := time.Now().Add(10 * time.Second)
	mine := 0
	for mine < 200 && time.Now().Before(deadline) {
		c, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		cons.PollFetches(c).EachRecord(func(r *kgo.Record) {
			var e events.Envelope
			_ = json.Unmarshal(r.Value, &e)
			if !strings.HasPrefix(e.Key, prefix) {
				return // another package's row drained by this test's publishers
			}
			mine++
			if seen[e.ID] {
				t.Errorf("event %d sent twice", e.ID)
			}
			seen[e.ID] = true
			if e.ID <= last[e.Key] {
				t.Errorf("key %s: event %d after %d", e.Key, e.ID, last[e.Key])
			}
			last[e.Key] = e.ID
		})
		cancel()
	}
	if mine != 200 {
		t.Fatalf("read %d of this test's events, want 200", mine)
	}
}

func TestEmitRefusesBadInput(t *testing.T) {
	pg := testenv.PG(t)
	ctx := context.Background()
	key := fmt.Sprintf("evtbad-%d", time.Now().UnixNano())
	for _, c := range []struct {
		typ, key string
		data     any
		want     string
	}{
		{"Bad Type", key, map[string]any{}, "type"},
		{"", key, map[string]any{}, "type"},
		{events.Redeemed, "", map[string]any{}, "key"},
		{events.Redeemed, strings.Repeat("k", 257), map[string]any{}, "key"},
		{events.Redeemed, key, []int{1}, "JSON object"},
		{events.Redeemed, key, func() {}, "data"},
	} {
		err := events.Emit(ctx, pg, c.typ, c.key, c.data)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Emit(%q, %.10q, %T) = %v, want an error naming %q", c.typ, c.key, c.data, err, c.want)
		}
	}
	var n int
	pg.QueryRow(ctx, `SELECT count(*) FROM events WHERE key = $1`, key).Scan(&n)
	if n != 0 {
		t.Fatalf("bad input wrote %d rows", n)
	}
	if _, err := events.NewPublisher(events.Config{Batch: -1}, pg, nil, slog.Default(), nil); err == nil || !strings.Contains(err.Error(), "Batch") {
		t.Fatalf("Batch -1: %v", err)
	}
}
