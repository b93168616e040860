package settle

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/kafkaopt"
)

// Why a record is set aside on the rejected topic (the reason label of
// flashgate_settler_records_rejected_total and the reject-reason header).
const (
	reasonUndecodable   = "undecodable"      // not a claim record, or one Postgres could never store
	reasonBadID         = "bad_id"           // an id outside the contract's limits, or a claim_id of the wrong shape
	reasonUnknownCamp   = "unknown_campaign" // no such campaign in Postgres
	reasonUnknownSKU    = "unknown_sku"      // the campaign has no such SKU
	reasonBusinessLine  = "business_line"    // not the campaign's business line
	reasonValue         = "value_mismatch"   // not the SKU's value
	reasonPostgresRefus = "postgres_refused" // Postgres refused it for good (SQLSTATE class 22 or 23)
)

var rejectReasons = [...]string{reasonUndecodable, reasonBadID, reasonUnknownCamp, reasonUnknownSKU,
	reasonBusinessLine, reasonValue, reasonPostgresRefus}

// rejected is one record set aside, with why.
type rejected struct {
	rec    *kgo.Record
	reason string
	err    error
}

// refusalTries is how many times a whole batch is written while Postgres refuses it
// for good (a data or constraint error) before the settler looks for the records to
// blame, halving the batch (each half tried once) down to single records. The tries
// cover a refusal that is not the records' fault after all (a migration mid-flight).
const refusalTries = 3

// permanent reports whether Postgres refused a statement because of what it was given:
// SQLSTATE class 22 (data exception) or 23 (integrity constraint violation). Anything
// else - a lost connection, a timeout, a serialization failure (40), a server going
// away (57, 08) - is transient and retried for as long as it lasts.
func permanent(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) != 5 {
		return false
	}
	return pe.Code[:2] == "22" || pe.Code[:2] == "23"
}

// writeRefusing writes items as one transaction, retrying transient failures like any
// write. When Postgres refuses the batch for good refusalTries times it is halved and
// each half written on its own (recursively), so the records Postgres refuses end up
// alone; those are marked refused (set aside with the poll, never retried again) and
// every other record is written. It returns how many claims were new rows.
func (s *Settler) writeRefusing(ctx context.Context, items []*item, tries int) (int64, error) {
	var written int64
	var refusal error
	attempts := 0
	err := s.retry(ctx, "write", s.m.pgErrors, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.PGTimeout)
		defer cancel()
		n, err := write(ctx, s.pg, s.method, items)
		if err != nil && permanent(err) {
			if attempts++; attempts >= tries {
				refusal = err
				return nil
			}
		}
		written = n
		return err
	})
	if err != nil {
		return 0, err
	}
	if refusal == nil {
		return written, nil
	}
	if len(items) == 1 {
		items[0].refused = refusal
		return 0, nil
	}
	s.log.Warn("Postgres refuses a batch for good; halving it to find the records to set aside",
		"claims", len(items), "err", refusal)
	mid := len(items) / 2
	n1, err := s.writeRefusing(ctx, items[:mid], 1)
	if err != nil {
		return 0, err
	}
	n2, err := s.writeRefusing(ctx, items[mid:], 1)
	if err != nil {
		return 0, err
	}
	return n1 + n2, nil
}

// setAside produces the rejected records to the rejected topic (original key and
// value, headers saying why and where from) and waits for the broker's ack, retrying
// until it is given or ctx ends: the poll's offsets are committed only after, so a
// record is never both uncommitted-away and missing from the rejected topic.
func (s *Settler) setAside(ctx context.Context, rs []rejected) error {
	if len(rs) == 0 {
		return nil
	}
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	out := make([]*kgo.Record, len(rs))
	for i, r := range rs {
		s.m.rejected[r.reason].Inc()
		// One line per record, but at most maxRejectLogs per poll: a flood of forged
		// records must not flood the log (the metric counts them all).
		if i < maxRejectLogs {
			s.log.Warn("setting a record aside on "+s.cfg.RejectTopic, "reason", r.reason, "err", r.err,
				"partition", r.rec.Partition, "offset", r.rec.Offset)
		} else if i == maxRejectLogs {
			s.log.Warn("more records set aside in this poll; not logged one by one", "more", len(rs)-maxRejectLogs)
		}
		detail := r.err.Error()
		if len(detail) > 512 {
			detail = detail[:512]
		}
		out[i] = &kgo.Record{Topic: s.cfg.RejectTopic, Key: r.rec.Key, Value: r.rec.Value, Headers: []kgo.RecordHeader{
			{Key: kafkaopt.RejectHeaderReason, Value: []byte(r.reason)},
			{Key: kafkaopt.RejectHeaderError, Value: []byte(detail)},
			{Key: kafkaopt.RejectHeaderTopic, Value: []byte(r.rec.Topic)},
			{Key: kafkaopt.RejectHeaderPartition, Value: strconv.AppendInt(nil, int64(r.rec.Partition), 10)},
			{Key: kafkaopt.RejectHeaderOffset, Value: strconv.AppendInt(nil, r.rec.Offset, 10)},
			{Key: kafkaopt.RejectHeaderTime, Value: []byte(now)},
		}}
	}
	return s.retry(ctx, "set-aside", s.m.rejectErrors, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.RejectTimeout)
		defer cancel()
		// Records acked by an earlier attempt are produced again: the rejected topic
		// is at-least-once, like flash.claims.
		for _, r := range out {
			r.Partition, r.Offset = 0, 0
		}
		return s.kcl.ProduceSync(ctx, out...).FirstErr()
	})
}

const maxRejectLogs = 10

// catalogCache remembers, per campaign, its business line and SKU values as Postgres
// holds them, so checking a record costs no query unless its campaign is new to the
// cache, or its entry is older than catalogTTL, or the record disagrees with it (then
// the entry is reloaded once before the record is rejected, so a campaign just
// re-PUT is judged by its current catalog). Unknown campaigns are not cached: they are
// looked up again, but once per poll for all the poll's records together. Only the
// consume loop uses it (no lock).
type catalogCache struct {
	pg      *pgxpool.Pool
	ttl     time.Duration
	max     int
	entries map[string]*catalogEntry
}

type catalogEntry struct {
	businessLine string
	skus         map[string]int64 // sku -> value
	loaded       time.Time
}

func newCatalogCache(pg *pgxpool.Pool, ttl time.Duration, max int) *catalogCache {
	return &catalogCache{pg: pg, ttl: ttl, max: max, entries: make(map[string]*catalogEntry)}
}

// check reports why r does not match the catalog ("" when it matches), given fresh
// entries for its campaign (see refresh).
func (c *catalogCache) check(r *claim.Record) (string, error) {
	e := c.entries[r.CampaignID]
	switch {
	case e == nil:
		return reasonUnknownCamp, fmt.Errorf("campaign_id: %q is not a campaign in Postgres", r.CampaignID)
	case e.businessLine != r.BusinessLine:
		return reasonBusinessLine, fmt.Errorf("business_line: %q is not campaign %s's (%s)", r.BusinessLine, r.CampaignID, e.businessLine)
	case r.NoPrize():
		return "", nil // a lottery draw that won nothing names no SKU (claim.Decode checked value 0)
	}
	v, ok := e.skus[r.SKU]
	switch {
	case !ok:
		return reasonUnknownSKU, fmt.Errorf("sku: campaign %s has no SKU %q", r.CampaignID, r.SKU)
	case v != r.Value:
		return reasonValue, fmt.Errorf("value: %d is not SKU %s's value (%d)", r.Value, r.SKU, v)
	}
	return "", nil
}

// load (re)reads the given campaigns from Postgres, in one query. A campaign Postgres
// does not hold is dropped from the cache.
func (c *catalogCache) load(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	rows, err := c.pg.Query(ctx, `SELECT c.id, c.business_line, s.sku, s.value
		FROM campaigns c JOIN campaign_skus s ON s.campaign_id = c.id WHERE c.id = ANY($1)`, ids)
	if err != nil {
		return fmt.Errorf("load %d campaigns: %w", len(ids), err)
	}
	defer rows.Close()
	now := time.Now()
	fresh := make(map[string]*catalogEntry, len(ids))
	for rows.Next() {
		var id, bl, sku string
		var value int64
		if err := rows.Scan(&id, &bl, &sku, &value); err != nil {
			return fmt.Errorf("load campaigns: %w", err)
		}
		e := fresh[id]
		if e == nil {
			e = &catalogEntry{businessLine: bl, skus: make(map[string]int64, 4), loaded: now}
			fresh[id] = e
		}
		e.skus[sku] = value
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load campaigns: %w", err)
	}
	for _, id := range ids {
		delete(c.entries, id)
	}
	// Bounded: past max entries, the cache is emptied of entries that were not just
	// loaded (they are reloaded on their next record; the working set of a sale is a
	// handful of campaigns, so this happens only under a flood of campaign ids).
	if len(c.entries)+len(fresh) > c.max {
		clear(c.entries)
	}
	for id, e := range fresh {
		c.entries[id] = e
	}
	return nil
}

// validate checks each decoded item's ids and its campaign, SKU, business line and
// value against Postgres' catalog (cached), and returns the items that pass and the
// ones set aside. Postgres failures of the lookup are retried like a write's.
func (s *Settler) validate(ctx context.Context, items []*item) ([]*item, []rejected, error) {
	var out []rejected
	keep := make([]*item, 0, len(items))
	now := time.Now()
	var stale []string
	seen := map[string]bool{}
	badID := make([]bool, len(items))
	for i, it := range items {
		if err := it.rec.CheckIDs(); err != nil {
			out = append(out, rejected{rec: it.src, reason: reasonBadID, err: err})
			badID[i] = true
			continue
		}
		id := it.rec.CampaignID
		if e := s.cat.entries[id]; (e == nil || now.Sub(e.loaded) > s.cat.ttl) && !seen[id] {
			seen[id] = true
			stale = append(stale, id)
		}
	}
	load := func(ids []string) error {
		return s.retry(ctx, "catalog", s.m.pgErrors, func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, s.cfg.PGTimeout)
			defer cancel()
			return s.cat.load(ctx, ids)
		})
	}
	if err := load(stale); err != nil {
		return nil, nil, err
	}
	// A record that disagrees with an entry loaded before this poll gets its campaign
	// reloaded once before it is judged.
	var recheck []string
	for i, it := range items {
		if badID[i] {
			continue
		}
		if reason, _ := s.cat.check(&it.rec); reason != "" && !seen[it.rec.CampaignID] {
			seen[it.rec.CampaignID] = true
			recheck = append(recheck, it.rec.CampaignID)
		}
	}
	if err := load(recheck); err != nil {
		return nil, nil, err
	}
	for i, it := range items {
		if badID[i] {
			continue
		}
		if reason, err := s.cat.check(&it.rec); reason != "" {
			out = append(out, rejected{rec: it.src, reason: reason, err: err})
			continue
		}
		keep = append(keep, it)
	}
	return keep, out, nil
}
