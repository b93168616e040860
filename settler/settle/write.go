package settle

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flashgate/flashgate/internal/claim"
)

// How a batch reaches Postgres. All three are idempotent in the same way; they differ
// only in how the rows travel. BenchmarkWrite measures them side by side, and
// writeChosen is the one it picked (numbers and reasons in write_bench_test.go).
type writeMethod int

const (
	// writeUnnest sends each column as one array parameter and inserts
	// SELECT * FROM unnest(...): one statement, prepared once whatever the batch size.
	writeUnnest writeMethod = iota
	// writeValues sends a multi-row VALUES list (14 parameters per claim); its text
	// differs per batch size, so each size is prepared once.
	writeValues
	// writeCopy COPYs the batch into a per-session temporary staging table and inserts
	// from it, in an explicit transaction.
	writeCopy
)

func (m writeMethod) String() string {
	switch m {
	case writeUnnest:
		return "unnest"
	case writeValues:
		return "values"
	case writeCopy:
		return "copy"
	}
	return "writeMethod(" + strconv.Itoa(int(m)) + ")"
}

const claimColumns = `claim_id, request_id, campaign_id, business_line, sku, user_id, device_id, ip,
	value, claimed_at, expires_at, kafka_partition, kafka_offset, channel, partner_code`

// ledgerFromNew is the tail every method shares. The claims insert skips any row whose
// claim_id is already there (redelivery) or whose (campaign_id, request_id) is already
// settled under another claim id, and RETURNs only the rows it inserted; the reserve
// entries are made from exactly those rows, so a claim gets its ledger entry in the
// same statement that creates it and never a second one (UNIQUE (claim_id, kind) would
// refuse it anyway). The statement's row count is therefore the number of new claims.
// The foreign key from budget_ledger to claims is checked at the end of the statement,
// when the CTE's rows exist.
const ledgerFromNew = `
	ON CONFLICT DO NOTHING
	RETURNING claim_id, campaign_id, business_line, value)
INSERT INTO budget_ledger (claim_id, campaign_id, business_line, kind, amount)
SELECT claim_id, campaign_id, business_line, 'reserve', value FROM new
ON CONFLICT (claim_id, kind) DO NOTHING`

var unnestSQL = `WITH new AS (
	INSERT INTO claims (` + claimColumns + `)
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
		$7::text[], $8::text[], $9::bigint[], $10::timestamptz[], $11::timestamptz[], $12::int[], $13::bigint[],
		$14::text[], $15::text[])` +
	ledgerFromNew

var copySQL = `WITH new AS (
	INSERT INTO claims (` + claimColumns + `)
	SELECT ` + claimColumns + ` FROM settle_stage` + ledgerFromNew

// The staging table lives per session and empties itself at each commit, so a pooled
// connection reuses it and never sees another batch's rows.
const createStage = `CREATE TEMP TABLE IF NOT EXISTS settle_stage (
	claim_id text, request_id text, campaign_id text, business_line text, sku text,
	user_id text, device_id text, ip text, value bigint, claimed_at timestamptz,
	expires_at timestamptz, kafka_partition int, kafka_offset bigint, channel text,
	partner_code text) ON COMMIT DELETE ROWS`

var stageColumns = []string{"claim_id", "request_id", "campaign_id", "business_line", "sku",
	"user_id", "device_id", "ip", "value", "claimed_at", "expires_at", "kafka_partition", "kafka_offset", "channel",
	"partner_code"}

// write inserts the claims and one reserve ledger entry per new claim, atomically (one
// transaction: a single statement for unnest and values, BEGIN..COMMIT for copy), and
// returns how many claims were new rows. On error nothing of the batch is written.
func write(ctx context.Context, pg *pgxpool.Pool, m writeMethod, items []*item) (int64, error) {
	if len(items) == 0 {
		return 0, nil
	}
	if hasDraws(items) {
		return writeWithDraws(ctx, pg, items)
	}
	switch m {
	case writeUnnest:
		return writeByUnnest(ctx, pg, items)
	case writeValues:
		return writeByValues(ctx, pg, items)
	case writeCopy:
		return writeByCopy(ctx, pg, items)
	}
	return 0, fmt.Errorf("write claims: unknown method %v", m)
}

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func writeByUnnest(ctx context.Context, pg execer, items []*item) (int64, error) {
	n := len(items)
	var (
		claimIDs, reqIDs, camps, bls = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		skus, users, devices, ips    = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		channels                     = make([]string, n)
		codes                        = make([]*string, n)
		values, offsets              = make([]int64, n), make([]int64, n)
		claimed, expires             = make([]time.Time, n), make([]time.Time, n)
		partitions                   = make([]int32, n)
	)
	for i, it := range items {
		r := &it.rec
		claimIDs[i], reqIDs[i], camps[i], bls[i] = r.ClaimID, r.RequestID, r.CampaignID, r.BusinessLine
		skus[i], users[i], devices[i], ips[i] = r.SKU, r.UserID, r.DeviceID, r.IP
		values[i], claimed[i], expires[i] = r.Value, r.ClaimedAt(), r.ExpiresAt()
		partitions[i], offsets[i] = it.partition, it.offset
		channels[i] = channelOf(r)
		codes[i] = codeOf(r)
	}
	tag, err := pg.Exec(ctx, unnestSQL, claimIDs, reqIDs, camps, bls, skus, users, devices, ips,
		values, claimed, expires, partitions, offsets, channels, codes)
	if err != nil {
		return 0, fmt.Errorf("insert %d claims: %w", n, err)
	}
	return tag.RowsAffected(), nil
}

// channelOf is the claims.channel of a record: its channel, "app" when it has none
// (claim.Decode already fills that in; a record built in memory may not).
func channelOf(r *claim.Record) string {
	if r.Channel == "" {
		return claim.ChannelApp
	}
	return r.Channel
}

// codeOf is the claims.partner_code of a record: NULL for a SKU without a code pool.
func codeOf(r *claim.Record) *string {
	if r.Code == "" {
		return nil
	}
	return &r.Code
}

// valuesSQL builds the multi-row VALUES statement for n claims.
func valuesSQL(n int) string {
	var b strings.Builder
	b.Grow(128 + n*80)
	b.WriteString("WITH new AS (\n\tINSERT INTO claims (" + claimColumns + ")\n\tVALUES ")
	p := 1
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		for c := 0; c < len(stageColumns); c++ {
			if c > 0 {
				b.WriteByte(',')
			}
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(p))
			p++
		}
		b.WriteByte(')')
	}
	b.WriteString(ledgerFromNew)
	return b.String()
}

func writeByValues(ctx context.Context, pg *pgxpool.Pool, items []*item) (int64, error) {
	args := make([]any, 0, len(items)*len(stageColumns))
	for _, it := range items {
		r := &it.rec
		args = append(args, r.ClaimID, r.RequestID, r.CampaignID, r.BusinessLine, r.SKU, r.UserID,
			r.DeviceID, r.IP, r.Value, r.ClaimedAt(), r.ExpiresAt(), it.partition, it.offset, channelOf(r), codeOf(r))
	}
	tag, err := pg.Exec(ctx, valuesSQL(len(items)), args...)
	if err != nil {
		return 0, fmt.Errorf("insert %d claims: %w", len(items), err)
	}
	return tag.RowsAffected(), nil
}

type stageRows struct {
	items []*item
	i     int
	row   [15]any
}

func (s *stageRows) Next() bool { s.i++; return s.i <= len(s.items) }
func (s *stageRows) Err() error { return nil }
func (s *stageRows) Values() ([]any, error) {
	it := s.items[s.i-1]
	r := &it.rec
	s.row = [15]any{r.ClaimID, r.RequestID, r.CampaignID, r.BusinessLine, r.SKU, r.UserID,
		r.DeviceID, r.IP, r.Value, r.ClaimedAt(), r.ExpiresAt(), it.partition, it.offset, channelOf(r), codeOf(r)}
	return s.row[:], nil
}

func writeByCopy(ctx context.Context, pg *pgxpool.Pool, items []*item) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, pg, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, createStage); err != nil {
			return fmt.Errorf("staging table: %w", err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"settle_stage"}, stageColumns, &stageRows{items: items}); err != nil {
			return fmt.Errorf("copy to staging: %w", err)
		}
		tag, err := tx.Exec(ctx, copySQL)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("insert %d claims: %w", len(items), err)
	}
	return n, nil
}
