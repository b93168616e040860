package verify

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/bench/record"
	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// sale is a small campaign whose claims were decided by the real claim script and
// "settled" the way the settler does (row + ledger reservation, then HDEL inflight),
// with bench's record of the 200s. Every test starts from a fresh one.
type sale struct {
	campaign, bl string
	budget       int64
	record       []record.Entry
	rows         []record.Entry
}

const (
	stockA, valueA = 5, 50
	stockB, valueB = 3, 100
	campaignBudget = 1000
	blBudget       = 10000
)

func newSale(t *testing.T, ctx context.Context, rdb *redis.Client, pg *pgxpool.Pool) *sale {
	t.Helper()
	s := &sale{campaign: testenv.ID(t, "vt"), bl: testenv.ID(t, "vbl"), budget: campaignBudget}
	cat := catalog.New(pg, rdb)
	if err := cat.PutBusinessLine(ctx, s.bl, blBudget); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"name":"verify test","business_line":%q,"starts_at":%q,"ends_at":%q,"per_user_limit":1,
		"budget":%d,"voucher_ttl":"72h","segment":null,"skus":[{"sku":"A","stock":%d,"value":%d},{"sku":"B","stock":%d,"value":%d}]}`,
		s.bl, time.Now().Add(-time.Minute).UTC().Format(time.RFC3339), time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		campaignBudget, stockA, valueA, stockB, valueB)
	cp, err := catalog.DecodeCampaign(s.campaign, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.PutCampaign(ctx, cp); err != nil {
		t.Fatal(err)
	}
	// Out of the settler's sight: a settler running against the same dev stack
	// discovers campaigns through this set and would relay this test's outbox.
	if err := rdb.SRem(ctx, rkeys.Campaigns, s.campaign).Err(); err != nil {
		t.Fatal(err)
	}

	// Ten users race: A (stock 5) gets 7 tries, B (stock 3) gets 3; u-0 also tries B
	// again (user_limit).
	type try struct{ user, sku string }
	var tries []try
	for i := 0; i < 7; i++ {
		tries = append(tries, try{"u-" + strconv.Itoa(i), "A"})
	}
	for i := 7; i < 10; i++ {
		tries = append(tries, try{"u-" + strconv.Itoa(i), "B"})
	}
	tries = append(tries, try{"u-0", "B"})
	batch := make([]testenv.ClaimReq, len(tries))
	for i, tr := range tries {
		reqID := "rq-" + strconv.Itoa(i)
		batch[i] = testenv.ClaimReq{Campaign: s.campaign, BusinessLine: s.bl, SKU: tr.sku, RequestID: reqID,
			ClaimID: s.campaign + ".c" + strconv.Itoa(i), User: tr.user, Device: "d-" + tr.user, IP: "198.18.0.1"}
	}
	res, err := testenv.RunClaims(ctx, rdb, batch)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := pg.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for i, tr := range tries {
		o := res[i]
		if o.Code != claim.CodeAccepted {
			continue
		}
		e := record.Entry{ClaimID: o.ClaimID, RequestID: "rq-" + strconv.Itoa(i), Campaign: s.campaign,
			User: tr.user, SKU: tr.sku, Value: o.Value}
		s.rows = append(s.rows, e)
		s.record = append(s.record, e)
		insertRow(t, ctx, tx, "", s.bl, e)
		if err := rdb.HDel(ctx, rkeys.Inflight(s.campaign), e.ClaimID).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if len(s.rows) != stockA+stockB {
		t.Fatalf("the claim script accepted %d claims, want %d", len(s.rows), stockA+stockB)
	}
	// A client retry answered from the idempotency record: the same claim again.
	replay := s.record[0]
	replay.Replayed = true
	// 503s: one for that request_id before its retry got 200 (the 200's), one for a
	// request_id that was never answered otherwise (nothing taken: not a row).
	s.record = append(s.record,
		record.Entry{RequestID: replay.RequestID, Campaign: s.campaign, User: replay.User, SKU: replay.SKU, Status: 503},
		replay,
		record.Entry{RequestID: "rq-unavailable", Campaign: s.campaign, User: "u-unavailable", SKU: "A", Status: 503})
	return s
}

type execer interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}

// insertRow writes a claim row and its reservation the way the settler does, into
// schema (or the live tables when schema is "").
func insertRow(t *testing.T, ctx context.Context, db execer, schema, bl string, e record.Entry) {
	t.Helper()
	now := time.Now()
	if _, err := db.Exec(ctx, `INSERT INTO `+table(schema, "claims")+` (claim_id, request_id, campaign_id, business_line, sku, user_id,
		device_id, ip, value, claimed_at, expires_at, settled_at, kafka_partition, kafka_offset)
		VALUES ($1,$2,$3,$4,$5,$6,$7,'198.18.0.1',$8,$9,$10,$9,0,0)`,
		e.ClaimID, e.RequestID, e.Campaign, bl, e.SKU, e.User, "d-"+e.User, e.Value, now, now.Add(72*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `INSERT INTO `+table(schema, "budget_ledger")+` (claim_id, campaign_id, business_line, kind, amount, created_at)
		VALUES ($1,$2,$3,'reserve',$4,$5)`, e.ClaimID, e.Campaign, bl, e.Value, now); err != nil {
		t.Fatal(err)
	}
}

func table(schema, name string) string {
	if schema == "" {
		return pgx.Identifier{name}.Sanitize()
	}
	return pgx.Identifier{schema, name}.Sanitize()
}

// copyOf copies the sale's rows of every table verify reads into a fresh schema
// (columns only: a copy has none of the live schema's keys, so a planted duplicate is
// possible there and impossible in the product's tables).
func copyOf(t *testing.T, ctx context.Context, pg *pgxpool.Pool, s *sale) string {
	t.Helper()
	schema := strings.ReplaceAll(testenv.ID(t, "vcopy"), "-", "_")
	stmts := []struct {
		sql string
		arg string
	}{
		{`CREATE SCHEMA ` + schema, ""},
		{`CREATE TABLE ` + schema + `.business_lines (LIKE business_lines INCLUDING DEFAULTS)`, ""},
		{`CREATE TABLE ` + schema + `.campaigns (LIKE campaigns INCLUDING DEFAULTS)`, ""},
		{`CREATE TABLE ` + schema + `.campaign_skus (LIKE campaign_skus INCLUDING DEFAULTS)`, ""},
		{`CREATE TABLE ` + schema + `.claims (LIKE claims INCLUDING DEFAULTS)`, ""},
		{`CREATE TABLE ` + schema + `.budget_ledger (LIKE budget_ledger INCLUDING DEFAULTS)`, ""},
		{`INSERT INTO ` + schema + `.business_lines SELECT * FROM business_lines WHERE id = $1`, s.bl},
		{`INSERT INTO ` + schema + `.campaigns SELECT * FROM campaigns WHERE id = $1`, s.campaign},
		{`INSERT INTO ` + schema + `.campaign_skus SELECT * FROM campaign_skus WHERE campaign_id = $1`, s.campaign},
		{`INSERT INTO ` + schema + `.claims SELECT * FROM claims WHERE campaign_id = $1`, s.campaign},
		{`INSERT INTO ` + schema + `.budget_ledger SELECT * FROM budget_ledger WHERE campaign_id = $1`, s.campaign},
	}
	for _, st := range stmts {
		var err error
		if st.arg == "" {
			_, err = pg.Exec(ctx, st.sql)
		} else {
			_, err = pg.Exec(ctx, st.sql, st.arg)
		}
		if err != nil {
			t.Fatalf("%s: %v", st.sql, err)
		}
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = pg.Exec(cctx, `DROP SCHEMA `+schema+` CASCADE`)
	})
	return schema
}

func check(t *testing.T, rep *Report, name string) Check {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", name, rep.Checks)
	return Check{}
}

func dump(rep *Report) string {
	var b strings.Builder
	rep.Print(&b)
	return b.String()
}

func TestVerify(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	s := newSale(t, ctx, rdb, pg)
	cfg := func(schema string, rec []record.Entry) Config {
		return Config{Campaign: s.campaign, Record: rec, Wait: 2 * time.Second, Poll: 50 * time.Millisecond, Schema: schema}
	}

	t.Run("clean sale holds", func(t *testing.T) {
		rep, err := Run(ctx, rdb, pg, cfg("", s.record))
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Held || rep.Rows != stockA+stockB || rep.Recorded != stockA+stockB {
			t.Fatalf("clean sale:\n%s", dump(rep))
		}
		if c := check(t, rep, "no 503 became a row"); !c.Pass || !strings.HasPrefix(c.Detail, "1 request_ids answered only 503: 0 ") {
			t.Fatalf("the 503 check of a clean sale: %+v", c)
		}
		// The same data through a copy also holds: the copy itself changes nothing.
		rep, err = Run(ctx, rdb, pg, cfg(copyOf(t, ctx, pg, s), s.record))
		if err != nil || !rep.Held {
			t.Fatalf("copy of a clean sale: %v\n%s", err, dump(rep))
		}
	})

	// Each plant goes into its own copy and must fail the check named.
	plants := []struct {
		name  string
		check []string
		plant func(t *testing.T, schema string) []record.Entry
	}{
		{"extra duplicate row", []string{"claim_id unique", "request_id unique", "every 200 is one row", "stock per SKU"},
			func(t *testing.T, schema string) []record.Entry {
				exec(t, ctx, pg, `INSERT INTO `+schema+`.claims SELECT * FROM `+schema+`.claims WHERE claim_id = $1`, s.rows[0].ClaimID)
				return s.record
			}},
		{"a second row for one request_id", []string{"request_id unique", "per-user limit", "ledger: one reservation per claim"},
			func(t *testing.T, schema string) []record.Entry {
				e := s.rows[1]
				e.ClaimID += "-again"
				insertRow(t, ctx, pg, schema, s.bl, e)
				exec(t, ctx, pg, `DELETE FROM `+schema+`.budget_ledger WHERE claim_id = $1`, e.ClaimID)
				return s.record
			}},
		{"a claim missing from Postgres", []string{"every 200 is one row", "Redis counters = rows", "ledger: one reservation per claim"},
			func(t *testing.T, schema string) []record.Entry {
				exec(t, ctx, pg, `DELETE FROM `+schema+`.claims WHERE claim_id = $1`, s.rows[2].ClaimID)
				return s.record
			}},
		{"a 200 that never became a row", []string{"every 200 is one row"},
			func(t *testing.T, schema string) []record.Entry {
				return append(append([]record.Entry(nil), s.record...), record.Entry{ClaimID: s.campaign + ".ghost",
					RequestID: "rq-ghost", Campaign: s.campaign, User: "u-ghost", SKU: "A", Value: valueA})
			}},
		{"an oversold SKU", []string{"stock per SKU", "Redis counters = rows"},
			func(t *testing.T, schema string) []record.Entry {
				insertRow(t, ctx, pg, schema, s.bl, record.Entry{ClaimID: s.campaign + ".extra", RequestID: "rq-extra",
					Campaign: s.campaign, User: "u-extra", SKU: "B", Value: valueB})
				return s.record
			}},
		{"campaign budget over", []string{"campaign budget"},
			func(t *testing.T, schema string) []record.Entry {
				exec(t, ctx, pg, `UPDATE `+schema+`.claims SET value = value + $2 WHERE claim_id = $1`, s.rows[0].ClaimID, campaignBudget)
				exec(t, ctx, pg, `UPDATE `+schema+`.budget_ledger SET amount = amount + $2 WHERE claim_id = $1`, s.rows[0].ClaimID, campaignBudget)
				return nil
			}},
		{"business-line budget over", []string{"business-line budget"},
			func(t *testing.T, schema string) []record.Entry {
				other := s.campaign + "-other"
				insertRow(t, ctx, pg, schema, s.bl, record.Entry{ClaimID: other + ".big", RequestID: "rq-big",
					Campaign: other, User: "u-big", SKU: "A", Value: blBudget})
				return s.record
			}},
		{"a user over the limit", []string{"per-user limit"},
			func(t *testing.T, schema string) []record.Entry {
				exec(t, ctx, pg, `UPDATE `+schema+`.claims SET user_id = $2 WHERE claim_id = $1`, s.rows[1].ClaimID, s.rows[0].User)
				return nil
			}},
		{"a double reservation", []string{"ledger: one reservation per claim"},
			func(t *testing.T, schema string) []record.Entry {
				exec(t, ctx, pg, `INSERT INTO `+schema+`.budget_ledger SELECT * FROM `+schema+`.budget_ledger WHERE claim_id = $1`, s.rows[3].ClaimID)
				return s.record
			}},
		{"a 503 that became a row", []string{"no 503 became a row"},
			func(t *testing.T, schema string) []record.Entry {
				// bench heard only 503 for rows[4]'s request_id, yet it is a row.
				took := s.rows[4]
				var rec []record.Entry
				for _, e := range s.record {
					if e.RequestID != took.RequestID {
						rec = append(rec, e)
					}
				}
				return append(rec, record.Entry{RequestID: took.RequestID, Campaign: s.campaign, User: took.User, SKU: took.SKU, Status: 503})
			}},
		{"a retry that got another claim", []string{"retries got the same claim"},
			func(t *testing.T, schema string) []record.Entry {
				bad := s.record[0]
				bad.ClaimID = s.rows[1].ClaimID
				return append(append([]record.Entry(nil), s.record...), bad)
			}},
	}
	for _, p := range plants {
		t.Run(p.name, func(t *testing.T) {
			schema := copyOf(t, ctx, pg, s)
			rec := p.plant(t, schema)
			rep, err := Run(ctx, rdb, pg, cfg(schema, rec))
			if err != nil {
				t.Fatal(err)
			}
			if rep.Held {
				t.Fatalf("planted %s, verify held:\n%s", p.name, dump(rep))
			}
			for _, name := range p.check {
				if c := check(t, rep, name); c.Pass {
					t.Errorf("planted %s: check %q passed:\n%s", p.name, name, dump(rep))
				}
			}
			if p.name == "a 503 that became a row" {
				if c := check(t, rep, "no 503 became a row"); len(c.Examples) != 1 || !strings.Contains(c.Examples[0], s.rows[4].RequestID) ||
					!strings.Contains(c.Detail, "2 request_ids answered only 503: 1 of them rows") {
					t.Errorf("the failed 503 check does not name the count and the request_id: %+v", c)
				}
			}
		})
	}

	// Settlement that does not catch up within the wait is a failure, not a pass.
	t.Run("not settled", func(t *testing.T) {
		key := rkeys.Inflight(s.campaign)
		if err := rdb.HSet(ctx, key, s.campaign+".stuck", "rq-stuck").Err(); err != nil {
			t.Fatal(err)
		}
		defer rdb.HDel(context.Background(), key, s.campaign+".stuck")
		c := cfg("", s.record)
		c.Wait = 300 * time.Millisecond
		rep, err := Run(ctx, rdb, pg, c)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Held || check(t, rep, "settled").Pass {
			t.Fatalf("a claim still in flight, verify held:\n%s", dump(rep))
		}
	})

	t.Run("unknown campaign", func(t *testing.T) {
		_, err := Run(ctx, rdb, pg, Config{Campaign: testenv.ID(t, "nope"), Wait: time.Millisecond})
		if err == nil || !strings.Contains(err.Error(), "unknown campaign") {
			t.Fatalf("got %v, want unknown campaign", err)
		}
		_, err = Run(ctx, rdb, pg, Config{Campaign: "bad id"})
		if err == nil || !strings.Contains(err.Error(), "campaign") {
			t.Fatalf("got %v, want an error naming the campaign", err)
		}
	})
}

func exec(t *testing.T, ctx context.Context, pg *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pg.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
