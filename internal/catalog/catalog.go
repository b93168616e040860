// Package catalog owns campaign definitions: business lines, campaigns with their SKUs,
// and segments. Postgres is the record; every change is written there first and then
// loaded into Redis ("warmed") in the shape the claim script reads. It also assembles a
// campaign's live figures from both stores.
package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/fielderr"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/risk/riskstate"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// Errors of the catalog. The admin API maps them to statuses in one place.
var (
	ErrNotFound = errors.New("not found")
	// ErrStarted: the change is not allowed once the campaign has started (a
	// *StartedError names the field).
	ErrStarted = errors.New("campaign already started")
)

// FieldError is bad input: which field and what was wrong with it (one type for every
// API, internal/fielderr).
type FieldError = fielderr.Error

func fieldErr(field, format string, args ...any) error { return fielderr.New(field, format, args...) }

// Campaign kinds (CONTRACT.md "Redemption kinds").
const (
	KindVoucher    = "voucher"
	KindPointsItem = "points_item"
)

// AcceptPointsItems gates "kind":"points_item". The claimer's points step debits the
// points of such a claim (DESIGN.md "Points: the cross-slot step"), so it is on; a
// deployment may turn it off to refuse new points_item campaigns (400 naming kind).
var AcceptPointsItems = true

// MaxVoucherTTL bounds voucher_ttl: longer than a year is a typo, not a campaign.
const MaxVoucherTTL = 366 * 24 * time.Hour

// SKU is one item of a campaign.
type SKU struct {
	SKU   string `json:"sku"`
	Stock int64  `json:"stock"`
	Value int64  `json:"value"`
	// The voucher's life (life.go): redeem only on an order of at least MinSpend, not on
	// an order of an excluded category.
	MinSpend           int64    `json:"min_spend,omitempty"`
	ExcludedCategories []string `json:"excluded_categories,omitempty"`
	// Points is a points_item SKU's price in points (issue 16); only that kind has it.
	Points *int64 `json:"points,omitempty"`
	// Weight and Delivery belong to a lottery's prizes (lottery.go).
	Weight   *int64    `json:"weight,omitempty"`
	Delivery *Delivery `json:"delivery,omitempty"`
}

// Campaign is a campaign as the admin API takes it.
type Campaign struct {
	ID           string    `json:"-"`
	Name         string    `json:"name"`
	BusinessLine string    `json:"business_line"`
	StartsAt     time.Time `json:"starts_at"`
	EndsAt       time.Time `json:"ends_at"`
	PerUserLimit int64     `json:"per_user_limit"`
	Budget       int64     `json:"budget"`
	VoucherTTL   string    `json:"voucher_ttl"`
	Segment      *string   `json:"segment"`
	RecycleStock bool      `json:"recycle_stock"`
	SKUs         []SKU     `json:"skus"`
	Paused       bool      `json:"paused"`
	// Transfer between users (life.go); MaxTransfers nil means 1.
	Transferable bool   `json:"transferable,omitempty"`
	MaxTransfers *int64 `json:"max_transfers,omitempty"`
	// Kind is "voucher" (the default) or "points_item" (CONTRACT.md "Redemption kinds").
	Kind string `json:"kind,omitempty"`
	// NoPrizeWeight is a lottery's no-prize weight (lottery.go).
	NoPrizeWeight *int64 `json:"no_prize_weight,omitempty"`

	ttl        time.Duration
	lifeFrozen string // the first life field a started campaign may not change (life.go)
	oddsFrozen string // the first odds field a started campaign may not change (lottery.go)
}

// ValidID reports whether id is 1-64 characters of [A-Za-z0-9._:-] (CONTRACT.md).
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

const idRule = "must be 1-64 characters of [A-Za-z0-9._:-]"

// DecodeCampaign parses and validates a campaign body. Unknown fields are refused.
func DecodeCampaign(id string, body []byte) (*Campaign, error) {
	if !ValidID(id) {
		return nil, fieldErr("id", idRule)
	}
	var c Campaign
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, jsonFieldError(err)
	}
	if dec.More() {
		return nil, fieldErr("body", "unexpected data after the JSON object")
	}
	c.ID = id
	return &c, c.validate()
}

func jsonFieldError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fieldErr(te.Field, "must be a %s", te.Type.String())
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "json: unknown field ") {
		return fieldErr(strings.Trim(strings.TrimPrefix(msg, "json: unknown field "), `"`), "unknown field")
	}
	var pe *time.ParseError
	if errors.As(err, &pe) {
		return fieldErr("starts_at/ends_at", "must be an RFC 3339 time, like 2027-02-10T12:00:00Z")
	}
	return fieldErr("body", "not valid JSON: %v", err)
}

func (c *Campaign) validate() error {
	switch {
	case strings.TrimSpace(c.Name) == "" || len(c.Name) > 200:
		return fieldErr("name", "required, at most 200 characters")
	case !ValidID(c.BusinessLine):
		return fieldErr("business_line", idRule)
	case c.StartsAt.IsZero():
		return fieldErr("starts_at", "required (RFC 3339)")
	case c.EndsAt.IsZero():
		return fieldErr("ends_at", "required (RFC 3339)")
	case !c.EndsAt.After(c.StartsAt):
		return fieldErr("ends_at", "must be after starts_at")
	case c.PerUserLimit < 1 || c.PerUserLimit > 1_000_000:
		return fieldErr("per_user_limit", "must be 1..1000000, got %d", c.PerUserLimit)
	case c.Budget < 0:
		return fieldErr("budget", "must not be negative, got %d", c.Budget)
	case c.Segment != nil && !ValidID(*c.Segment):
		return fieldErr("segment", idRule+" or null")
	case len(c.SKUs) == 0:
		return fieldErr("skus", "at least one SKU is required")
	case len(c.SKUs) > 1000:
		return fieldErr("skus", "at most 1000 SKUs")
	}
	ttl, err := time.ParseDuration(c.VoucherTTL)
	if err != nil {
		return fieldErr("voucher_ttl", "must be a duration like 72h, got %q", c.VoucherTTL)
	}
	if ttl <= 0 || ttl > MaxVoucherTTL {
		return fieldErr("voucher_ttl", "must be more than 0 and at most %s", MaxVoucherTTL)
	}
	c.ttl = ttl
	switch c.Kind {
	case "":
		c.Kind = KindVoucher
	case KindVoucher, KindLottery:
	case KindPointsItem:
		if !AcceptPointsItems {
			return fieldErr("kind", "points_item campaigns are not served yet (their claims would not debit points)")
		}
	default:
		return fieldErr("kind", "must be voucher, points_item or lottery, got %q", c.Kind)
	}
	seen := make(map[string]bool, len(c.SKUs))
	for i, s := range c.SKUs {
		f := "skus[" + strconv.Itoa(i) + "]"
		switch {
		case !ValidID(s.SKU):
			return fieldErr(f+".sku", idRule)
		case seen[s.SKU]:
			return fieldErr(f+".sku", "duplicate SKU %q", s.SKU)
		case s.Stock < 0 || s.Stock > 1_000_000_000:
			return fieldErr(f+".stock", "must be 0..1000000000, got %d", s.Stock)
		case c.Kind == KindPointsItem && (s.Points == nil || *s.Points < 1 || *s.Points > 1_000_000_000):
			return fieldErr(f+".points", "a points_item SKU needs its price in points, 1..1000000000")
		case c.Kind != KindPointsItem && s.Points != nil:
			return fieldErr(f+".points", "only a points_item campaign's SKUs have a points price (kind is %s)", c.Kind)
		case s.Value <= 0 || s.Value > 1_000_000_000_000:
			return fieldErr(f+".value", "must be 1..1000000000000, got %d", s.Value)
		}
		seen[s.SKU] = true
	}
	if err := c.validateLottery(); err != nil {
		return err
	}
	return c.validateLife()
}

// Catalog reads and writes campaign definitions.
type Catalog struct {
	pg  *pgxpool.Pool
	rdb *redis.Client
	now func() time.Time
	// changed, when set, is told about every campaign this catalog re-warmed, paused or
	// resumed, after Redis has the change (see OnChange).
	changed func(campaign string)
	// partners is the partner key index (partners.go).
	partners partnersIndex
}

// OnChange sets a function told, synchronously and after Redis has the change, about
// every campaign this catalog re-warms, pauses or resumes. The gateway points it at its
// claimer, so its own short-circuit flags are gone before the admin call returns (other
// gateways learn it from the fg:changes message the same write publishes). Call it
// before the catalog is used.
func (c *Catalog) OnChange(f func(campaign string)) { c.changed = f }

func (c *Catalog) notify(campaign string) {
	if c.changed != nil {
		c.changed(campaign)
	}
}

// New builds a catalog.
func New(pg *pgxpool.Pool, rdb *redis.Client) *Catalog {
	return &Catalog{pg: pg, rdb: rdb, now: time.Now}
}

// PutBusinessLine creates or changes a business line's total budget. Lowering it below
// what is already spent stops further claims of that line; nothing is taken back.
func (c *Catalog) PutBusinessLine(ctx context.Context, id string, budget int64) error {
	if !ValidID(id) {
		return fieldErr("id", idRule)
	}
	if budget < 0 {
		return fieldErr("budget", "must not be negative, got %d", budget)
	}
	if _, err := c.pg.Exec(ctx, `INSERT INTO business_lines (id, budget) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET budget = EXCLUDED.budget, updated_at = now()`, id, budget); err != nil {
		return fmt.Errorf("store business line %s: %w", id, err)
	}
	// budget.lua: while a recovery fences the line (the budget field is the fence) the
	// new budget waits in "budget_next" for the unfence; writing it now would let claims
	// be decided on counters not yet rebuilt.
	if err := scripts.Budget.Run(ctx, c.rdb, []string{rkeys.BusinessLine(id), rkeys.RecoveryLock(id)}, budget).Err(); err != nil {
		return fmt.Errorf("warm business line %s: %w", id, err)
	}
	return nil
}

// PutCampaign creates or changes a campaign and warms Redis.
//
// Before the campaign starts anything may change. Once it has started - by the Redis
// clock, the one claims are decided by, in the same atomic step as the warm - only the
// name, ends_at, paused, the budget and the SKUs' stocks may; any other change is a
// *StartedError naming the field (ErrStarted). Whatever changes, what was taken is never
// reset: a SKU's stock left is its new total minus what it has given out, and a total
// below that is a *ConflictError. The Redis step runs inside the Postgres transaction,
// which commits only once Redis has the definition, so the two agree; concurrent PUTs of
// one campaign are serialized by its row lock.
func (c *Catalog) PutCampaign(ctx context.Context, cp *Campaign) error {
	tx, err := c.pg.Begin(ctx)
	if err != nil {
		return fmt.Errorf("put campaign %s: %w", cp.ID, err)
	}
	defer tx.Rollback(ctx)
	prev, err := storedCampaign(ctx, tx, cp.ID)
	if err != nil {
		return fmt.Errorf("put campaign %s: %w", cp.ID, err)
	}
	prevLife, err := readLife(ctx, tx, cp.ID, prev != nil)
	if err != nil {
		return fmt.Errorf("put campaign %s: %w", cp.ID, err)
	}
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM business_lines WHERE id = $1)`, cp.BusinessLine).Scan(&exists); err != nil {
		return fmt.Errorf("put campaign %s: %w", cp.ID, err)
	}
	if !exists {
		return fieldErr("business_line", "unknown business line %q (PUT /admin/v1/business-lines/%s first)", cp.BusinessLine, cp.BusinessLine)
	}
	if cp.Segment != nil {
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM segments WHERE name = $1)`, *cp.Segment).Scan(&exists); err != nil {
			return fmt.Errorf("put campaign %s: %w", cp.ID, err)
		}
		if !exists {
			return fieldErr("segment", "unknown segment %q (PUT /admin/v1/segments/%s first)", *cp.Segment, *cp.Segment)
		}
	}
	_, err = tx.Exec(ctx, `INSERT INTO campaigns
		(id, name, business_line, starts_at, ends_at, per_user_limit, budget, voucher_ttl_ms, segment, recycle_stock, paused, kind)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)
		ON CONFLICT (id) DO UPDATE SET name=EXCLUDED.name, business_line=EXCLUDED.business_line,
		  starts_at=EXCLUDED.starts_at, ends_at=EXCLUDED.ends_at, per_user_limit=EXCLUDED.per_user_limit,
		  budget=EXCLUDED.budget, voucher_ttl_ms=EXCLUDED.voucher_ttl_ms, segment=EXCLUDED.segment,
		  recycle_stock=EXCLUDED.recycle_stock, paused=EXCLUDED.paused, kind=EXCLUDED.kind, updated_at=now()`,
		cp.ID, cp.Name, cp.BusinessLine, cp.StartsAt, cp.EndsAt, cp.PerUserLimit, cp.Budget,
		cp.ttl.Milliseconds(), cp.Segment, cp.RecycleStock, cp.Paused, cp.kind())
	if err != nil {
		return fmt.Errorf("put campaign %s: %w", cp.ID, err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM campaign_skus WHERE campaign_id = $1`, cp.ID); err != nil {
		return fmt.Errorf("put campaign %s skus: %w", cp.ID, err)
	}
	rows := make([][]any, len(cp.SKUs))
	for i, s := range cp.SKUs {
		var hook *string
		if s.Delivery != nil {
			hook = &s.Delivery.Webhook
		}
		rows[i] = []any{cp.ID, s.SKU, s.Stock, s.Value, s.Points, s.Weight, hook}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"campaign_skus"}, []string{"campaign_id", "sku", "stock", "value", "points", "weight", "delivery_webhook"}, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("put campaign %s skus: %w", cp.ID, err)
	}
	if err := storeLife(ctx, tx, cp, prevLife); err != nil {
		return err
	}
	if cp.oddsFrozen, err = storeLottery(ctx, tx, cp, prev); err != nil {
		return err
	}
	if err := c.warm(ctx, cp, prev); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		// Redis has the new definition, Postgres the old one: a retry of the same PUT
		// (idempotent) makes them agree again.
		return fmt.Errorf("put campaign %s: commit after the warm (retry the PUT): %w", cp.ID, err)
	}
	c.notify(cp.ID)
	return nil
}

// kind is the campaign's kind, voucher when not given (a Campaign built in Go).
func (c *Campaign) kind() string {
	if c.Kind == "" {
		return KindVoucher
	}
	return c.Kind
}

// stored is a campaign's definition as Postgres has it (nil: a new campaign).
type stored struct {
	bl        string
	starts    time.Time
	limit     int64
	ttlMs     int64
	segment   *string
	recycle   bool
	skuValue  map[string]int64
	skuOrder  []string
	kind      string
	skuPoints map[string]*int64
	// A lottery's odds as stored (lottery.go).
	noPrize     *int64
	oddsVersion string
	skuWeight   map[string]*int64
}

// storedCampaign reads the campaign's stored definition and locks its row until tx ends.
func storedCampaign(ctx context.Context, tx pgx.Tx, id string) (*stored, error) {
	var p stored
	var ver *string
	err := tx.QueryRow(ctx, `SELECT business_line, starts_at, per_user_limit, voucher_ttl_ms, segment, recycle_stock, kind,
		no_prize_weight, odds_version
		FROM campaigns WHERE id = $1 FOR UPDATE`, id).Scan(&p.bl, &p.starts, &p.limit, &p.ttlMs, &p.segment, &p.recycle, &p.kind,
		&p.noPrize, &ver)
	if ver != nil {
		p.oddsVersion = *ver
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `SELECT sku, value, points, weight FROM campaign_skus WHERE campaign_id = $1 ORDER BY sku`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	p.skuValue = map[string]int64{}
	p.skuPoints = map[string]*int64{}
	p.skuWeight = map[string]*int64{}
	for rows.Next() {
		var sku string
		var v int64
		var pts, w *int64
		if err := rows.Scan(&sku, &v, &pts, &w); err != nil {
			return nil, err
		}
		p.skuWeight[sku] = w
		p.skuValue[sku] = v
		p.skuPoints[sku] = pts
		p.skuOrder = append(p.skuOrder, sku)
	}
	return &p, rows.Err()
}

// frozenChange names the first field cp changes that may not change once the campaign
// has started ("" when none, or when the campaign is new). Allowed after the start:
// name, ends_at, paused, budget and each SKU's stock (what was taken is never reset).
func frozenChange(prev *stored, cp *Campaign) string {
	if prev == nil {
		return ""
	}
	switch {
	case prev.bl != cp.BusinessLine:
		return "business_line"
	case !prev.starts.Equal(cp.StartsAt):
		return "starts_at"
	case prev.limit != cp.PerUserLimit:
		return "per_user_limit"
	case prev.ttlMs != cp.ttl.Milliseconds():
		return "voucher_ttl"
	case (prev.segment == nil) != (cp.Segment == nil) || prev.segment != nil && *prev.segment != *cp.Segment:
		return "segment"
	case prev.recycle != cp.RecycleStock:
		return "recycle_stock"
	case prev.kind != cp.kind():
		return "kind"
	case len(prev.skuValue) != len(cp.SKUs):
		return "skus"
	}
	for i, s := range cp.SKUs {
		v, ok := prev.skuValue[s.SKU]
		if !ok {
			return "skus[" + strconv.Itoa(i) + "].sku"
		}
		if v != s.Value {
			return "skus[" + strconv.Itoa(i) + "].value"
		}
		if pp := prev.skuPoints[s.SKU]; (pp == nil) != (s.Points == nil) || pp != nil && *pp != *s.Points {
			return "skus[" + strconv.Itoa(i) + "].points"
		}
	}
	if cp.lifeFrozen != "" {
		return cp.lifeFrozen
	}
	return cp.oddsFrozen
}

// StartedError refuses a change that a started campaign may not take; Field names it.
type StartedError struct{ Field string }

func (e *StartedError) Error() string {
	return e.Field + ": cannot change once the campaign has started (by the Redis clock); after the start only name, ends_at, paused, budget and the SKUs' stock may change"
}

// Is makes errors.Is(err, ErrStarted) hold.
func (e *StartedError) Is(target error) bool { return target == ErrStarted }

// ConflictError refuses a change that the campaign's live state does not allow (409).
type ConflictError struct{ Field, Msg string }

func (e *ConflictError) Error() string { return e.Field + ": " + e.Msg }

// ErrRecovering: the campaign's Redis state is being rebuilt (or must be first); the
// PUT can be retried shortly.
var ErrRecovering = errors.New("campaign is being rebuilt after a Redis loss")

// warm writes a campaign into Redis in one warm.lua call (one slot: the campaign's),
// which decides by the Redis clock whether the campaign has started and keeps what was
// taken. It runs inside PutCampaign's transaction, before its commit.
func (c *Catalog) warm(ctx context.Context, cp *Campaign, prev *stored) error {
	seg := ""
	if cp.Segment != nil {
		seg = *cp.Segment
	}
	paused := "0"
	if cp.Paused {
		paused = "1"
	}
	var prevStarts int64
	if prev != nil {
		prevStarts = prev.starts.UnixMilli()
	}
	runID, err := recovery.RunID(ctx, c.rdb)
	if err != nil {
		return fmt.Errorf("warm campaign %s: %w", cp.ID, err)
	}
	// The risk state first (issue 21.4): a campaign warmed into a Redis that lost its
	// data must not take claims before the blocks and rules are back; on a fresh
	// deployment this writes the marker claim.lua needs (internal/risk/riskstate).
	if _, _, err := riskstate.Ensure(ctx, c.pg, c.rdb, runID); err != nil {
		return fmt.Errorf("warm campaign %s: %w", cp.ID, err)
	}
	// Partner quotas first: a quota without its campaign's state is inert, and every
	// claim of the warmed campaign then finds its partners' quotas in place.
	pq, err := c.campaignPartnerQuotas(ctx, cp.ID)
	if err != nil {
		return fmt.Errorf("warm campaign %s partner quotas: %w", cp.ID, err)
	}
	if len(pq) > 0 {
		if _, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			queuePartnerQuotas(ctx, p, cp.ID, pq)
			return nil
		}); err != nil {
			return fmt.Errorf("warm campaign %s partner quotas: %w", cp.ID, err)
		}
	}
	// The points prices before the meta (points.go).
	if err := c.writePrices(ctx, cp, prev); err != nil {
		return err
	}
	// In the set first: a campaign whose warm then fails is only an id without state,
	// while one warmed but missing from the set would be skipped by the relay.
	if err := c.rdb.SAdd(ctx, rkeys.Campaigns, cp.ID).Err(); err != nil {
		return fmt.Errorf("warm campaign %s: %w", cp.ID, err)
	}
	keep := make(map[string]bool, len(cp.SKUs))
	for _, s := range cp.SKUs {
		keep[s.SKU] = true
	}
	for attempt := 0; attempt < 3; attempt++ {
		old, err := c.rdb.SMembers(ctx, rkeys.SKUs(cp.ID)).Result()
		if err != nil {
			return fmt.Errorf("warm campaign %s: %w", cp.ID, err)
		}
		keys := []string{rkeys.Meta(cp.ID), rkeys.SKUs(cp.ID)}
		args := []any{runID, cp.BusinessLine, cp.StartsAt.UnixMilli(), cp.EndsAt.UnixMilli(), cp.PerUserLimit,
			cp.Budget, cp.ttl.Milliseconds(), paused, seg, prevStarts, frozenChange(prev, cp), len(cp.SKUs)}
		for _, s := range cp.SKUs {
			keys = append(keys, rkeys.SKU(cp.ID, s.SKU))
			args = append(args, s.SKU, s.Stock, s.Value)
		}
		var gone []string
		for _, s := range old {
			if !keep[s] {
				gone = append(gone, s)
			}
		}
		args = append(args, len(gone))
		for _, s := range gone {
			keys = append(keys, rkeys.SKU(cp.ID, s))
			args = append(args, s)
		}
		// The kind and a lottery's odds (lottery.go), in the same atomic step.
		args = append(args, cp.kind(), cp.OddsField())
		res, err := scripts.Warm.Run(ctx, c.rdb, keys, args...).Slice()
		if err != nil {
			return fmt.Errorf("warm campaign %s: %w", cp.ID, err)
		}
		code, _ := res[0].(int64)
		switch code {
		case scripts.WarmDone:
			return nil
		case scripts.WarmStarted:
			f, _ := res[1].(string)
			return &StartedError{Field: f}
		case scripts.WarmRecovering:
			return fmt.Errorf("warm campaign %s: %w", cp.ID, ErrRecovering)
		case scripts.WarmBelowTaken:
			i, _ := res[1].(int64)
			out, _ := res[2].(int64)
			return &ConflictError{Field: "skus[" + strconv.FormatInt(i, 10) + "].stock",
				Msg: fmt.Sprintf("must be at least the %d units this SKU has already given out", out)}
		case scripts.WarmSKUsMoved:
			continue // another PUT changed the SKU set in between: read it again
		default:
			return fmt.Errorf("warm campaign %s: warm.lua answered %v", cp.ID, res)
		}
	}
	return fmt.Errorf("warm campaign %s: its SKU set kept changing", cp.ID)
}

// SetPaused pauses or resumes a campaign: Postgres first, then the live flag in Redis.
func (c *Catalog) SetPaused(ctx context.Context, id string, paused bool) error {
	if !ValidID(id) {
		return ErrNotFound
	}
	tag, err := c.pg.Exec(ctx, `UPDATE campaigns SET paused = $2, updated_at = now() WHERE id = $1`, id, paused)
	if err != nil {
		return fmt.Errorf("pause campaign %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	v := "0"
	if paused {
		v = "1"
	}
	_, err = c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, rkeys.Meta(id), "paused", v)
		// claim.lua answers paused before ended or sold_out: gateways must stop
		// answering those locally for this campaign.
		p.Publish(ctx, rkeys.Changes, rkeys.Meta(id))
		return nil
	})
	if err != nil {
		return fmt.Errorf("pause campaign %s in redis: %w", id, err)
	}
	c.notify(id)
	return nil
}

// PutSegment replaces a segment's members (one user id per line). Redis gets the new set
// atomically: it is built under a load key and renamed over the live one.
func (c *Catalog) PutSegment(ctx context.Context, name string, body []byte) (int, error) {
	if !ValidID(name) {
		return 0, fieldErr("name", idRule)
	}
	var users []string
	seen := make(map[string]bool)
	for i, line := range strings.Split(string(body), "\n") {
		u := strings.TrimSpace(line)
		if u == "" {
			continue
		}
		if !ValidID(u) {
			return 0, fieldErr("line "+strconv.Itoa(i+1), "user id "+idRule)
		}
		if !seen[u] {
			seen[u] = true
			users = append(users, u)
		}
	}
	tx, err := c.pg.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("put segment %s: %w", name, err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO segments (name, size) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET size = EXCLUDED.size, updated_at = now()`, name, len(users)); err != nil {
		return 0, fmt.Errorf("put segment %s: %w", name, err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM segment_members WHERE segment = $1`, name); err != nil {
		return 0, fmt.Errorf("put segment %s: %w", name, err)
	}
	rows := make([][]any, len(users))
	for i, u := range users {
		rows[i] = []any{name, u}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"segment_members"}, []string{"segment", "user_id"}, pgx.CopyFromRows(rows)); err != nil {
		return 0, fmt.Errorf("put segment %s members: %w", name, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("put segment %s: %w", name, err)
	}
	live := rkeys.Segment(name)
	load := live + ":load"
	if err := c.rdb.Del(ctx, load).Err(); err != nil {
		return 0, fmt.Errorf("load segment %s: %w", name, err)
	}
	for i := 0; i < len(users); i += 10000 {
		j := min(i+10000, len(users))
		members := make([]any, j-i)
		for k, u := range users[i:j] {
			members[k] = u
		}
		if err := c.rdb.SAdd(ctx, load, members...).Err(); err != nil {
			return 0, fmt.Errorf("load segment %s: %w", name, err)
		}
	}
	if len(users) == 0 {
		err = c.rdb.Del(ctx, live).Err()
	} else {
		err = c.rdb.Rename(ctx, load, live).Err()
	}
	if err != nil {
		return 0, fmt.Errorf("load segment %s: %w", name, err)
	}
	return len(users), nil
}

// isFK reports a foreign-key violation.
func isFK(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23503"
}
