package e2e

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/testenv"
)

// settlerMetric sums a metric's samples (every label set) on the settler's /metrics.
func (s *system) settlerMetric(name string) float64 {
	resp, err := http.Get(s.settler + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// TestRecordsSetAsideDuringASale (issues 14 and 21) runs a sale through the real
// gateway and settler while flash.claims also receives records no gateway made - a
// claim of an unknown campaign, one with an oversized user id, one with a forged
// value, bytes that are not JSON - and one real claim (answered 200 by the gateway)
// that Postgres refuses for good (a CHECK this test adds to its private database).
// Settlement goes on: every other 200 is a row, and the five records are on
// flash.claims.rejected with their reasons.
func TestRecordsSetAsideDuringASale(t *testing.T) {
	f := startFaults(t, faultOpts{pg: startPG(t)})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if _, err := f.pg.Exec(ctx, `ALTER TABLE claims ADD CONSTRAINT e2e_no_poison CHECK (user_id NOT LIKE 'poison%')`); err != nil {
		t.Fatal(err)
	}
	const stock = 400
	cmp := f.campaign(f.bl, 1_000_000, 1, sku{"rp-50", stock, 50})
	us := users(testenv.ID(t, "u"), 300)
	us = append(us[:150:150], append([]string{"poison-" + testenv.ID(t, "p")}, us[150:]...)...)
	wait, answered := f.sale(cmp, "rp-50", us, 16)
	testenv.Eventually(t, 60*time.Second, "part of the sale is answered", func() bool { return answered.Load() > 50 })

	forged := claim.Record{Version: claim.Version, ClaimID: cmp + "." + strings.Repeat("f", claim.ClaimIDRandLen),
		RequestID: "forged-1", CampaignID: cmp, BusinessLine: f.bl, SKU: "rp-50", UserID: "mallory", DeviceID: "d-m",
		IP: "10.9.9.9", Value: 50, ClaimedAtMs: time.Now().UnixMilli(), ExpiresAtMs: time.Now().Add(time.Hour).UnixMilli()}
	unknown, oversized, value := forged, forged, forged
	unknown.CampaignID, unknown.ClaimID = "no-such-campaign", "no-such-campaign."+strings.Repeat("0", claim.ClaimIDRandLen)
	oversized.UserID = strings.Repeat("m", 65)
	value.Value = 50_000
	kcl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(f.brokers, ",")...), kgo.DefaultProduceTopic(kafkaopt.ClaimsTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer kcl.Close()
	var bad []*kgo.Record
	for _, r := range []claim.Record{unknown, oversized, value} {
		bad = append(bad, &kgo.Record{Key: []byte(r.CampaignID), Value: r.AppendJSON(nil)})
	}
	bad = append(bad, &kgo.Record{Key: []byte(cmp), Value: []byte("{not json")})
	if err := kcl.ProduceSync(ctx, bad...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	answers := wait()
	poison := answers[150]
	if poison.Status != 200 {
		t.Fatalf("the claim Postgres will refuse was answered %d by the gateway, want 200 (it is a valid claim)", poison.Status)
	}
	testenv.Eventually(t, 60*time.Second, "five records set aside", func() bool {
		return f.settlerMetric("flashgate_settler_records_rejected_total") >= 5
	})
	f.settled(cmp, 60*time.Second)
	rows := claimIDsInPG(t, f.pg, cmp)
	accepted := 0
	for i, a := range answers {
		if a.Status != 200 {
			continue
		}
		accepted++
		if in := rows[a.ClaimID]; in != (i != 150) {
			t.Errorf("claim %s of user %s: row %v", a.ClaimID, us[i], in)
		}
	}
	if len(rows) != accepted-1 || accepted > stock {
		t.Fatalf("%d rows for %d accepted (one refused), stock %d", len(rows), accepted, stock)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(f.brokers, ",")...),
		kgo.ConsumeTopics(kafkaopt.ClaimsRejectedTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	reasons := map[string]int{}
	for n := 0; n < 5 && ctx.Err() == nil; {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			n++
			for _, h := range r.Headers {
				if h.Key == kafkaopt.RejectHeaderReason {
					reasons[string(h.Value)]++
				}
			}
		})
	}
	want := map[string]int{"unknown_campaign": 1, "bad_id": 1, "value_mismatch": 1, "undecodable": 1, "postgres_refused": 1}
	for r, n := range want {
		if reasons[r] != n {
			t.Errorf("rejected topic: %d records with reason %s, want %d (all: %v)", reasons[r], r, n, reasons)
		}
	}
	t.Logf("sale: %d accepted, %d rows; set aside: %v", accepted, len(rows), reasons)
}
