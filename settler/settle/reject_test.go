package settle_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/store"
	"github.com/flashgate/flashgate/internal/testenv"
)

// readRejected reads want records from topic's rejected topic (from its start), failing
// the test if they do not all arrive within 30 s.
func readRejected(t *testing.T, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(testenv.Brokers()...), kgo.ConsumeTopics(topic+".rejected"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want && ctx.Err() == nil {
		out = append(out, cl.PollFetches(ctx).Records()...)
	}
	if len(out) < want {
		t.Fatalf("%d records on %s.rejected after 30s, want %d", len(out), topic, want)
	}
	return out
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// rejectedBy reads flashgate_settler_records_rejected_total{reason}.
func (r *running) rejectedBy(reason string) float64 {
	r.t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		r.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "flashgate_settler_records_rejected_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// checkSetAside checks that every bad record is on the rejected topic exactly as it
// was produced, with its reason and source, and that the metric counts each reason.
func checkSetAside(t *testing.T, r *running, topic string, bad []*kgo.Record, reasons []string) {
	t.Helper()
	want := map[string]string{} // source partition/offset -> reason
	for i, b := range bad {
		want[fmt.Sprintf("%d/%d", b.Partition, b.Offset)] = reasons[i]
	}
	got := readRejected(t, topic, len(bad))
	byReason := map[string]float64{}
	for _, g := range got {
		src := header(g, kafkaopt.RejectHeaderPartition) + "/" + header(g, kafkaopt.RejectHeaderOffset)
		reason, ok := want[src]
		if !ok {
			t.Fatalf("rejected record from %s (reason %s) was not one of the bad records", src, header(g, kafkaopt.RejectHeaderReason))
		}
		if h := header(g, kafkaopt.RejectHeaderReason); h != reason {
			t.Errorf("record %s set aside as %q (%s), want %q", src, h, header(g, kafkaopt.RejectHeaderError), reason)
		}
		if h := header(g, kafkaopt.RejectHeaderTopic); h != topic {
			t.Errorf("record %s: source topic %q, want %q", src, h, topic)
		}
		for _, b := range bad {
			if fmt.Sprintf("%d/%d", b.Partition, b.Offset) == src && string(b.Value) != string(g.Value) {
				t.Errorf("record %s: value changed on the way: %q, want %q", src, g.Value, b.Value)
			}
		}
		t.Logf("set aside %s: %s: %s", src, header(g, kafkaopt.RejectHeaderReason), header(g, kafkaopt.RejectHeaderError))
		byReason[reason]++
	}
	for reason, n := range byReason {
		if m := r.rejectedBy(reason); m != n {
			t.Errorf("records_rejected_total{reason=%q} = %v, want %v", reason, m, n)
		}
	}
}

// TestForgedRecordsAreSetAsideWhileASaleSettles mixes into a sale's stream records no
// gateway could have produced - a campaign, SKU, business line or value that is not
// Postgres', an oversized id, a claim_id of the wrong shape, a copy of a real claim
// with a forged value, bytes that are not JSON - and checks that the sale settles
// exactly, every bad record is on the rejected topic unchanged with its reason, and
// the offsets pass them all.
func TestForgedRecordsAreSetAsideWhileASaleSettles(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	const n = 200
	c, recs := testenv.DurableCampaign(t, rdb, pg, n)
	other := testenv.NewCampaign(t, rdb, pg, 1) // a real campaign of another business line

	forge := func(edit func(r *claim.Record)) []byte {
		r := recs[0]
		r.RequestID = testenv.ID(t, "forged")
		r.ClaimID = c.ID + "." + strings.Repeat("f", claim.ClaimIDRandLen)
		edit(&r)
		return r.AppendJSON(nil)
	}
	type forged struct {
		rec    []byte
		reason string
	}
	bad := []forged{
		{forge(func(r *claim.Record) {
			r.CampaignID = "no-such-campaign"
			r.ClaimID = "no-such-campaign." + strings.Repeat("0", 26)
		}), "unknown_campaign"},
		{forge(func(r *claim.Record) { r.SKU = "rp-999999" }), "unknown_sku"},
		{forge(func(r *claim.Record) { r.Value = 5_000_000 }), "value_mismatch"},
		{forge(func(r *claim.Record) { r.BusinessLine = other.BusinessLine }), "business_line"},
		{forge(func(r *claim.Record) { r.UserID = strings.Repeat("u", 65) }), "bad_id"},
		{forge(func(r *claim.Record) { r.DeviceID = strings.Repeat("d", 4000) }), "bad_id"},
		{forge(func(r *claim.Record) { r.ClaimID = "x" }), "bad_id"},
		{forge(func(r *claim.Record) { r.ClaimID = other.ID + "." + strings.Repeat("0", 26) }), "bad_id"},
		// A copy of a real claim (same claim_id and request_id) with a forged value,
		// ahead of the real one in the same poll: the real one must still be written.
		{func() []byte { r := recs[n-1]; r.Value = 1; return r.AppendJSON(nil) }(), "value_mismatch"},
		{[]byte(`not json`), "undecodable"},
	}
	kcl := testenv.Producer(t)
	topic, group := testenv.NewTopic(t), testenv.ID(t, "settler-test")
	key := []byte(c.ID)
	var all []*kgo.Record
	all = append(all, testenv.Produce(t, kcl, topic, recs[:n/2])...)
	badKrs := make([]*kgo.Record, len(bad))
	reasons := make([]string, len(bad))
	for i, b := range bad {
		badKrs[i], reasons[i] = &kgo.Record{Key: key, Value: b.rec}, b.reason
	}
	all = append(all, testenv.ProduceRaw(t, kcl, topic, badKrs)...)
	all = append(all, testenv.Produce(t, kcl, topic, recs[n/2:])...)

	r := startSettler(t, deps{rdb: rdb, pg: pg, topic: topic, group: group})
	checkBooks(t, c, waitRows(t, c, pg, n), n)
	if !c.ClaimIDs(t, pg)[recs[n-1].ClaimID] {
		t.Fatal("the real claim behind a forged copy was not written")
	}
	r.waitMetric("flashgate_settler_records_rejected_total", float64(len(bad)), 30*time.Second)
	testenv.Eventually(t, 10*time.Second, "offsets committed past every record", func() bool {
		return committedPast(t, group, all)
	})
	checkSetAside(t, r, topic, badKrs, reasons)
	if b := other.ReadBooks(t, pg); b.Claims != 0 {
		t.Fatalf("the other campaign got %d rows from forged records", b.Claims)
	}
	if got := r.metric("flashgate_settler_claims_written_total"); got != n {
		t.Fatalf("claims written %v, want %d", got, n)
	}
	if err := r.ready(); err != nil {
		t.Fatalf("ready: %v", err)
	}
}

// privateSchema creates a schema of the test's own holding copies of claims and
// budget_ledger with one more constraint - user_id must not start with "poison" - and
// returns a pool whose search_path finds them first (the catalog tables stay public).
// It is how a test gets a record that decodes and matches its campaign but that
// Postgres refuses, without touching the shared tables.
func privateSchema(t *testing.T, pg *pgxpool.Pool) *pgxpool.Pool {
	t.Helper()
	schema := strings.ReplaceAll(testenv.ID(t, "refuse"), "-", "_")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, q := range []string{
		`CREATE SCHEMA ` + schema,
		`CREATE TABLE ` + schema + `.claims (LIKE public.claims INCLUDING ALL)`,
		`ALTER TABLE ` + schema + `.claims ADD CONSTRAINT no_poison CHECK (user_id NOT LIKE 'poison%')`,
		`CREATE TABLE ` + schema + `.budget_ledger (LIKE public.budget_ledger INCLUDING ALL)`,
		`ALTER TABLE ` + schema + `.budget_ledger ADD FOREIGN KEY (claim_id) REFERENCES ` + schema + `.claims (claim_id)`,
	} {
		if _, err := pg.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := pg.Exec(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Logf("drop schema %s: %v", schema, err)
		}
	})
	sep := "?"
	if strings.Contains(testenv.PGURL(), "?") {
		sep = "&"
	}
	pool, err := store.Open(ctx, testenv.PGURL()+sep+"search_path="+schema+",public", 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// TestPostgresRefusedRecordIsSetAside (issue 21, suspected: "a record that decodes but
// that Postgres refuses is retried forever, stalling its partition"). A real claim -
// decided by claim.lua, confirmed by Redis - that Postgres refuses for good (a CHECK
// violation, SQLSTATE 23514) sits in the middle of a sale's stream, in the same batch
// as 100 others. Before the fix the batch was retried forever and nothing after it
// settled; now the batch is retried a bounded number of times, halved until the
// refused record is alone, the other 100 are written, the refused one is on the
// rejected topic, the offsets pass it and the settler is ready again.
func TestPostgresRefusedRecordIsSetAside(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	refusing := privateSchema(t, pg)
	const n = 100
	c := testenv.NewCampaign(t, rdb, pg, n+1)
	recs := c.Claim(t, n)
	poison := []claim.Record{{RequestID: "r-poison", UserID: "poison-1", DeviceID: "d-poison", IP: "10.0.0.1"}}
	if code := c.Decide(t, poison)[0]; code != claim.CodeAccepted {
		t.Fatalf("poison claim: script code %d, want accepted", code)
	}
	c.MarkDurable(t, append(recs, poison[0]))
	stream := append(append(append([]claim.Record{}, recs[:n/2]...), poison[0]), recs[n/2:]...)
	kcl := testenv.Producer(t)
	topic, group := testenv.NewTopic(t), testenv.ID(t, "settler-test")
	all := testenv.Produce(t, kcl, topic, stream)
	start := time.Now()
	r := startSettler(t, deps{rdb: rdb, pg: refusing, topic: topic, group: group})
	checkBooks(t, c, waitRows(t, c, refusing, n), n)
	t.Logf("the %d good claims settled %s after the settler started", n, time.Since(start).Round(time.Millisecond))
	if c.ClaimIDs(t, refusing)[poison[0].ClaimID] {
		t.Fatal("the refused claim is a row")
	}
	r.waitMetric("flashgate_settler_records_rejected_total", 1, 30*time.Second)
	testenv.Eventually(t, 10*time.Second, "offsets committed past every record", func() bool {
		return committedPast(t, group, all)
	})
	checkSetAside(t, r, topic, all[n/2:n/2+1], []string{"postgres_refused"})
	if got := r.metric("flashgate_settler_claims_written_total"); got != n {
		t.Fatalf("claims written %v, want %d", got, n)
	}
	if got := r.metric("flashgate_settler_duplicates_ignored_total"); got != 0 {
		t.Fatalf("duplicates %v, want 0", got)
	}
	// The refused claim's outbox entry and inflight field are gone too: the relay
	// must not bring it back every -relay-min-age.
	if ob, inf := c.Leftovers(t); ob != 0 || inf != 0 {
		t.Fatalf("outbox %d, inflight %d; want 0, 0", ob, inf)
	}
	testenv.Eventually(t, 10*time.Second, "ready again", func() bool { return r.ready() == nil })
}
