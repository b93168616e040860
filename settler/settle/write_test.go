package settle

import (
	"context"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/testenv"
)

// TestWriteMethods holds every write method to the same idempotency against the real
// Postgres: new claims become one row and one reserve entry each; a second claim for an
// already-settled (campaign, request_id), in the same statement or later, is ignored
// with no ledger entry; a full redelivery writes nothing.
func TestWriteMethods(t *testing.T) {
	pg := testenv.PG(t)
	for _, m := range []writeMethod{writeUnnest, writeValues, writeCopy} {
		t.Run(m.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			campaign := testenv.ID(t, "write")
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				pg.Exec(ctx, `DELETE FROM budget_ledger WHERE campaign_id = $1`, campaign)
				pg.Exec(ctx, `DELETE FROM claims WHERE campaign_id = $1`, campaign)
			})
			mk := func(claimID, requestID string, value int64, partition int32, offset int64) *item {
				r := rec(campaign, campaign+"."+claimID)
				r.RequestID, r.Value = requestID, value
				return &item{rec: r, partition: partition, offset: offset}
			}
			first := []*item{
				mk("a", "r1", 50, 0, 10),
				mk("b", "r2", 100, 1, 11),
				mk("c", "r3", 500, 2, 12),
				mk("d", "r1", 50, 3, 13), // r1 again under another claim id, same statement
			}
			n, err := write(ctx, pg, m, first)
			if err != nil || n != 3 {
				t.Fatalf("first write: %d new, %v; want 3, nil", n, err)
			}
			later := []*item{mk("e", "r2", 100, 0, 20), first[0], first[1]}
			if n, err := write(ctx, pg, m, later); err != nil || n != 0 {
				t.Fatalf("redelivery: %d new, %v; want 0, nil", n, err)
			}
			var rows, sum, ledger, amount int64
			var part int32
			var off int64
			if err := pg.QueryRow(ctx, `SELECT count(*), coalesce(sum(value), 0) FROM claims WHERE campaign_id = $1`, campaign).Scan(&rows, &sum); err != nil {
				t.Fatal(err)
			}
			if err := pg.QueryRow(ctx, `SELECT count(*), coalesce(sum(amount), 0) FROM budget_ledger WHERE campaign_id = $1 AND kind = 'reserve'`, campaign).Scan(&ledger, &amount); err != nil {
				t.Fatal(err)
			}
			if err := pg.QueryRow(ctx, `SELECT kafka_partition, kafka_offset FROM claims WHERE claim_id = $1`, campaign+".c").Scan(&part, &off); err != nil {
				t.Fatal(err)
			}
			if rows != 3 || sum != 650 || ledger != 3 || amount != 650 || part != 2 || off != 12 {
				t.Fatalf("rows %d sum %d ledger %d amount %d, claim c at %d/%d; want 3 650 3 650, 2/12", rows, sum, ledger, amount, part, off)
			}
		})
	}
}

// TestWriteChannel: every write method stores each claim's channel in claims.channel; a
// record that names none (from before channels) is stored as 'app'.
func TestWriteChannel(t *testing.T) {
	pg := testenv.PG(t)
	for _, m := range []writeMethod{writeUnnest, writeValues, writeCopy} {
		t.Run(m.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			campaign := testenv.ID(t, "chan")
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				pg.Exec(ctx, `DELETE FROM budget_ledger WHERE campaign_id = $1`, campaign)
				pg.Exec(ctx, `DELETE FROM claims WHERE campaign_id = $1`, campaign)
			})
			want := map[string]string{"a": "app", "b": "app", "c": "partner:acme", "d": "push:spring"}
			var items []*item
			for i, id := range []string{"a", "b", "c", "d"} {
				r := rec(campaign, campaign+"."+id)
				r.RequestID = "r" + id
				if id != "a" {
					r.Channel = want[id]
				}
				items = append(items, &item{rec: r, partition: 0, offset: int64(i)})
			}
			if n, err := write(ctx, pg, m, items); err != nil || n != 4 {
				t.Fatalf("write: %d new, %v; want 4", n, err)
			}
			rows, err := pg.Query(ctx, `SELECT claim_id, channel FROM claims WHERE campaign_id = $1`, campaign)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			got := map[string]string{}
			for rows.Next() {
				var id, ch string
				if err := rows.Scan(&id, &ch); err != nil {
					t.Fatal(err)
				}
				got[id[len(campaign)+1:]] = ch
			}
			if len(got) != 4 {
				t.Fatalf("got %v", got)
			}
			for id, ch := range want {
				if got[id] != ch {
					t.Errorf("claim %s: channel %q, want %q", id, got[id], ch)
				}
			}
		})
	}
}
