package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/testenv"
)

// TestPrizeDeliverySurvivesASettlerKill: prizes are settled and their webhooks called by
// the settler; the settler is killed -9 while calls are in flight and restarted. Every
// prize ends delivered, the fulfilment server acts once per Idempotency-Key (a call cut
// by the kill is repeated with the same key), and each delivery has one `delivered`
// event. Private Redis, broker and Postgres (no other test's settler touches these
// deliveries). Issue 17: "a settler kill -9 in the middle loses none".
func TestPrizeDeliverySurvivesASettlerKill(t *testing.T) {
	const prizes = 30
	var mu sync.Mutex
	calls, acted := map[string]int{}, map[string]int{}
	inflight := make(chan struct{}, 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if _, err := io.ReadAll(r.Body); err != nil || key == "" {
			http.Error(w, "bad", 400)
			return
		}
		mu.Lock()
		calls[key]++
		mu.Unlock()
		inflight <- struct{}{}
		select { // a slow fulfilment: the kill lands while calls are in flight
		case <-time.After(400 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		mu.Lock()
		if acted[key] == 0 {
			acted[key] = 1 // the idempotent act: once per key
		}
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	f := startFaults(t, faultOpts{pg: startPG(t), settlerExtra: []string{
		"FLASH_DELIVERY_CALL_TIMEOUT=1s", "FLASH_DELIVERY_INTERVAL=50ms"}})
	camp := f.campaign(f.bl, 10_000_000, 1, sku{SKU: "phone", Stock: prizes, Value: 100})
	// The campaign PUT has no delivery field until the lottery kind lands (issue 17):
	// the webhook is set on the SKU's row directly.
	if _, err := f.pg.Exec(context.Background(), `UPDATE campaign_skus SET delivery_webhook = $1 WHERE campaign_id = $2`, srv.URL, camp); err != nil {
		t.Fatal(err)
	}
	wait, _ := f.sale(camp, "phone", users(testenv.ID(t, "winner"), prizes), 10)
	answers := wait()
	accepted, reasons, ids := count(answers)
	if accepted != prizes {
		t.Fatalf("accepted %d of %d (others %v)", accepted, prizes, reasons)
	}
	// Kill the settler once a few calls are in flight, then start it again.
	for i := 0; i < 3; i++ {
		select {
		case <-inflight:
		case <-time.After(30 * time.Second):
			t.Fatal("no delivery call within 30 s of the sale")
		}
	}
	f.st.Kill()
	f.startSettler()

	testenv.Eventually(t, 60*time.Second, "every prize delivered", func() bool {
		var n int
		f.pg.QueryRow(context.Background(), `SELECT count(*) FROM deliveries WHERE campaign_id = $1 AND state = 'delivered'`, camp).Scan(&n)
		return n == prizes
	})
	mu.Lock()
	defer mu.Unlock()
	repeated := 0
	for id := range ids {
		if acted[id] != 1 {
			t.Errorf("prize %s fulfilled %d times", id, acted[id])
		}
		if calls[id] > 1 {
			repeated++
		}
	}
	if len(acted) != prizes {
		t.Errorf("the fulfilment server acted for %d keys, want %d", len(acted), prizes)
	}
	var events int
	f.pg.QueryRow(context.Background(), `SELECT count(*) FROM events e JOIN deliveries d ON d.claim_id = e.key
	  WHERE d.campaign_id = $1 AND e.type = 'delivered'`, camp).Scan(&events)
	if events != prizes {
		t.Errorf("%d delivered events, want %d", events, prizes)
	}
	t.Logf("%d prizes delivered once each; %d of them were called again after the kill (same key)", prizes, repeated)
}
