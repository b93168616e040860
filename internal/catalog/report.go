package catalog

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// ReportRow is one line of a campaign report: one SKU (or all, SKU "*"), for all users
// (Segment "") or for the members of one segment.
type ReportRow struct {
	Segment string `json:"segment,omitempty"`
	// Channel is set on the per-channel rows (Report.Channels).
	Channel string `json:"channel,omitempty"`
	SKU     string `json:"sku"`
	Value   int64  `json:"value,omitempty"` // face value of the SKU (0 on "*" rows)
	Stock   int64  `json:"stock,omitempty"` // the SKU's stock (all users' rows only)
	// Issued vouchers: every claim that is a row, whatever became of it.
	Issued   int64 `json:"issued"`
	Redeemed int64 `json:"redeemed"`
	Expired  int64 `json:"expired"`
	// Outstanding vouchers are neither redeemed nor expired yet.
	Outstanding int64 `json:"outstanding"`
	// Users is how many distinct users hold at least one voucher ("users recalled").
	Users int64 `json:"users"`
	// RedemptionRate is Redeemed / Issued (0 when nothing was issued).
	RedemptionRate float64 `json:"redemption_rate"`
	// BudgetSpent is the face value reserved for the issued vouchers (ledger "reserve").
	BudgetSpent int64 `json:"budget_spent"`
	// BudgetRecovered is the value given back by expiry (ledger "release").
	BudgetRecovered int64 `json:"budget_recovered"`
	// NetSpent = BudgetSpent − BudgetRecovered: what the campaign cost (the redeemed
	// vouchers plus those still outstanding).
	NetSpent int64 `json:"net_spent"`
}

// SegmentReport is the per-tier split: the campaign's figures restricted to the members
// of one segment.
type SegmentReport struct {
	Segment string      `json:"segment"`
	SKUs    []ReportRow `json:"skus"`
	Total   ReportRow   `json:"total"`
}

// Report is GET /admin/v1/campaigns/{id}/report: what operations reviews after a
// campaign. It reads the books (Postgres) only: a claim still in flight is not issued
// yet.
type Report struct {
	CampaignID   string      `json:"campaign_id"`
	Name         string      `json:"name"`
	BusinessLine string      `json:"business_line"`
	Segment      *string     `json:"segment"`
	StartsAt     time.Time   `json:"starts_at"`
	EndsAt       time.Time   `json:"ends_at"`
	GeneratedAt  time.Time   `json:"generated_at"`
	SKUs         []ReportRow `json:"skus"`
	Total        ReportRow   `json:"total"`
	// Segments splits the figures by user segment when the campaign is limited to one:
	// a row per segment its claimants belong to (the campaign's own segment - all of
	// them - and any other, such as the RFM tiers of a recall campaign). A user in two
	// segments counts in both. Empty for a campaign open to everyone.
	Segments []SegmentReport `json:"segments,omitempty"`
	// Channels splits the all-SKU figures by where the claims came from: one row per
	// channel with claims ("app", "partner:<id>", "push:<id>"), by channel.
	Channels []ReportRow `json:"channels"`
	// Review is the per-tier and per-channel review (review.go).
	Review []ReviewRow `json:"review"`
}

func (r *ReportRow) finish() {
	if r.Issued > 0 {
		r.RedemptionRate = float64(r.Redeemed) / float64(r.Issued)
	}
	r.NetSpent = r.BudgetSpent - r.BudgetRecovered
}

// The aggregate every report row is made of. Each claim has at most one reserve and one
// release row (UNIQUE (claim_id, kind)), so the joins never multiply a claim.
const reportAggregates = `count(cl.claim_id),
	count(cl.claim_id) FILTER (WHERE cl.state = 'redeemed'),
	count(cl.claim_id) FILTER (WHERE cl.state = 'expired'),
	count(cl.claim_id) FILTER (WHERE cl.state = 'settled'),
	count(DISTINCT cl.user_id),
	coalesce(sum(rs.amount), 0),
	coalesce(sum(rl.amount), 0)`

const reportJoins = `LEFT JOIN budget_ledger rs ON rs.claim_id = cl.claim_id AND rs.kind = 'reserve'
	LEFT JOIN budget_ledger rl ON rl.claim_id = cl.claim_id AND rl.kind = 'release'`

func (r *ReportRow) dest() []any {
	return []any{&r.Issued, &r.Redeemed, &r.Expired, &r.Outstanding, &r.Users, &r.BudgetSpent, &r.BudgetRecovered}
}

// Report builds a campaign's report from one consistent snapshot of the books.
func (c *Catalog) Report(ctx context.Context, id string) (*Report, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	tx, err := c.pg.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("report %s: %w", id, err)
	}
	defer tx.Rollback(ctx)
	rep := &Report{CampaignID: id, GeneratedAt: c.now().UTC()}
	err = tx.QueryRow(ctx, `SELECT name, business_line, segment, starts_at, ends_at FROM campaigns WHERE id = $1`, id).
		Scan(&rep.Name, &rep.BusinessLine, &rep.Segment, &rep.StartsAt, &rep.EndsAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("report %s: %w", id, err)
	}

	// Per SKU, every SKU of the campaign even if nothing was issued.
	rows, err := tx.Query(ctx, `SELECT s.sku, s.value, s.stock, `+reportAggregates+`
		FROM campaign_skus s
		LEFT JOIN claims cl ON cl.campaign_id = s.campaign_id AND cl.sku = s.sku
		`+reportJoins+`
		WHERE s.campaign_id = $1 GROUP BY s.sku, s.value, s.stock ORDER BY s.sku`, id)
	if err != nil {
		return nil, fmt.Errorf("report %s: %w", id, err)
	}
	for rows.Next() {
		var row ReportRow
		if err := rows.Scan(append([]any{&row.SKU, &row.Value, &row.Stock}, row.dest()...)...); err != nil {
			rows.Close()
			return nil, fmt.Errorf("report %s: %w", id, err)
		}
		row.finish()
		rep.SKUs = append(rep.SKUs, row)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("report %s: %w", id, err)
	}
	rep.Total.SKU = "*"
	if err := tx.QueryRow(ctx, `SELECT `+reportAggregates+` FROM claims cl `+reportJoins+`
		WHERE cl.campaign_id = $1`, id).Scan(rep.Total.dest()...); err != nil {
		return nil, fmt.Errorf("report %s: %w", id, err)
	}
	for _, s := range rep.SKUs {
		rep.Total.Stock += s.Stock
	}
	rep.Total.finish()

	if err := channelSplit(ctx, tx, rep); err != nil {
		return nil, fmt.Errorf("report %s: %w", id, err)
	}
	if rep.Review, err = reviewRows(ctx, tx, id); err != nil {
		return nil, fmt.Errorf("report %s: review: %w", id, err)
	}
	if rep.Segment != nil {
		if err := c.segmentSplit(ctx, tx, rep); err != nil {
			return nil, fmt.Errorf("report %s: %w", id, err)
		}
	}
	return rep, tx.Commit(ctx)
}

// channelSplit fills Report.Channels (DESIGN.md "Partners").
func channelSplit(ctx context.Context, tx pgx.Tx, rep *Report) error {
	rows, err := tx.Query(ctx, `SELECT cl.channel, `+reportAggregates+` FROM claims cl `+reportJoins+`
		WHERE cl.campaign_id = $1 GROUP BY cl.channel ORDER BY cl.channel`, rep.CampaignID)
	if err != nil {
		return err
	}
	defer rows.Close()
	rep.Channels = []ReportRow{}
	for rows.Next() {
		row := ReportRow{SKU: "*"}
		if err := rows.Scan(append([]any{&row.Channel}, row.dest()...)...); err != nil {
			return err
		}
		row.finish()
		rep.Channels = append(rep.Channels, row)
	}
	return rows.Err()
}

func (c *Catalog) segmentSplit(ctx context.Context, tx pgx.Tx, rep *Report) error {
	values := map[string]int64{}
	for _, s := range rep.SKUs {
		values[s.SKU] = s.Value
	}
	// GROUPING SETS gives each segment's per-SKU rows and its all-SKU row (sku NULL) in
	// one pass; distinct users are right on both.
	rows, err := tx.Query(ctx, `SELECT m.segment, cl.sku, `+reportAggregates+`
		FROM claims cl JOIN segment_members m ON m.user_id = cl.user_id
		`+reportJoins+`
		WHERE cl.campaign_id = $1
		GROUP BY GROUPING SETS ((m.segment, cl.sku), (m.segment))
		ORDER BY m.segment, cl.sku NULLS LAST`, rep.CampaignID)
	if err != nil {
		return err
	}
	defer rows.Close()
	bySeg := map[string]*SegmentReport{}
	var order []string
	for rows.Next() {
		var seg string
		var sku *string
		var row ReportRow
		if err := rows.Scan(append([]any{&seg, &sku}, row.dest()...)...); err != nil {
			return err
		}
		sr := bySeg[seg]
		if sr == nil {
			sr = &SegmentReport{Segment: seg}
			bySeg[seg] = sr
			order = append(order, seg)
		}
		row.Segment = seg
		if sku == nil {
			row.SKU = "*"
			row.finish()
			sr.Total = row
			continue
		}
		row.SKU, row.Value = *sku, values[*sku]
		row.finish()
		sr.SKUs = append(sr.SKUs, row)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	// The campaign's own segment first (it holds every claimant), then the others.
	own := *rep.Segment
	sort.SliceStable(order, func(i, j int) bool { return order[i] == own && order[j] != own })
	for _, s := range order {
		rep.Segments = append(rep.Segments, *bySeg[s])
	}
	return nil
}

// ReportCSVHeader is the CSV report's header line.
var ReportCSVHeader = []string{"segment", "sku", "value", "stock", "issued", "redeemed", "expired", "outstanding",
	"users", "redemption_rate", "budget_spent", "budget_recovered", "net_spent"}

// WriteCSV writes the report as one CSV table: the per-SKU rows and the all-SKU row
// ("*") for all users (segment "*"), then the same for each segment.
func (r *Report) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(ReportCSVHeader); err != nil {
		return err
	}
	line := func(seg string, row ReportRow) error {
		i := func(n int64) string { return strconv.FormatInt(n, 10) }
		return cw.Write([]string{seg, row.SKU, i(row.Value), i(row.Stock), i(row.Issued), i(row.Redeemed), i(row.Expired),
			i(row.Outstanding), i(row.Users), strconv.FormatFloat(row.RedemptionRate, 'f', 4, 64),
			i(row.BudgetSpent), i(row.BudgetRecovered), i(row.NetSpent)})
	}
	for _, row := range r.SKUs {
		if err := line("*", row); err != nil {
			return err
		}
	}
	if err := line("*", r.Total); err != nil {
		return err
	}
	for _, s := range r.Segments {
		for _, row := range s.SKUs {
			if err := line(s.Segment, row); err != nil {
				return err
			}
		}
		if err := line(s.Segment, s.Total); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
