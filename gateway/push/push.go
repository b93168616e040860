// Package push owns push to tiers (CONTRACT.md "Issuance and the voucher's life";
// DESIGN.md "Push"): PUT /admin/v1/campaigns/{id}/pushes/{push_id} issues one voucher to
// every user of each named segment, a SKU per segment, through claim.lua's decisions on
// the channel push:<push_id>. The push's budget and stock are held first (push.lua, the
// campaign's slot), so the push is refused whole or fits; its users are fixed in
// Postgres when it is made and issued in batches by a runner that any gateway resumes
// after a crash (a lease in the pushes row); each user's request_id is derived from the
// push and the user, so a batch redone after a crash decides nothing twice.
package push

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// Limits of a push body.
const (
	MaxTiers = 32
	// DeviceID and IP are what a push claim carries for the device and IP of a user
	// claim: no velocity rule applies to a push (claim.lua), a block of device "push"
	// stops every push.
	DeviceID = "push"
	IP       = "0.0.0.0"
)

// Push states (pushes.state).
const (
	StateEscrowing = "escrowing"
	StateRunning   = "running"
	StateDone      = "done"
	StateRefused   = "refused"
)

// Errors.
var (
	ErrNotFound    = errors.New("push: not found")
	ErrUnavailable = errors.New("push: unavailable")
)

// FieldError is bad input: 400 naming the field; nothing was written.
type FieldError = catalog.FieldError

// ConflictError: the push_id exists with another body (409).
type ConflictError struct{ Field, Msg string }

func (e *ConflictError) Error() string { return e.Field + ": " + e.Msg }

// Refusal: the push was refused whole (409 with a claim rejection reason); nothing was
// taken.
type Refusal struct {
	Reason, SKU string
	Progress    *Progress
}

func (e *Refusal) Error() string { return "push refused: " + e.Reason }

// Config tunes the service; zero values get defaults.
type Config struct {
	// Batch is how many users a runner step issues (one Postgres read and one progress
	// write per step; default 2048).
	Batch int
	// ScriptBatch is how many claims one claim.lua call decides (default 256: a call
	// holds Redis for about a millisecond).
	ScriptBatch int
	// Depth is how many batches a runner has in flight at once (default 2; 1 is one
	// batch at a time). The cursor moves in order past durable batches only.
	Depth int
	// Lease is how long a runner owns a push without renewing it (default 15s); another
	// gateway resumes a push whose lease ran out.
	Lease time.Duration
	// Poll is how often the runner looks for pushes to run or resume (default 1s).
	Poll time.Duration
	// Owner names this runner in pushes.lease_owner (default: a random id).
	Owner string
	// RedisTimeout and AckTimeout bound one script call and one batch's produce.
	RedisTimeout, AckTimeout time.Duration
	// AcceptGrace and RejectTTL are claim.lua's header arguments (the claimer's).
	AcceptGrace, RejectTTL time.Duration
}

// Service makes, runs and reports pushes.
type Service struct {
	cfg  Config
	pg   *pgxpool.Pool
	rdb  *redis.Client
	kcl  *kgo.Client
	log  *slog.Logger
	kick chan struct{}
}

// New builds the service. kcl produces to flash.claims with the durable settings.
func New(cfg Config, pg *pgxpool.Pool, rdb *redis.Client, kcl *kgo.Client, log *slog.Logger) (*Service, error) {
	if pg == nil || rdb == nil || kcl == nil {
		return nil, errors.New("push: Postgres, Redis and a Kafka client are required")
	}
	def := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	if cfg.Batch == 0 {
		cfg.Batch = 2048
	}
	if cfg.ScriptBatch == 0 {
		cfg.ScriptBatch = 256
	}
	if cfg.Depth == 0 {
		cfg.Depth = 2
	}
	def(&cfg.Lease, 15*time.Second)
	def(&cfg.Poll, time.Second)
	def(&cfg.RedisTimeout, 2*time.Second)
	def(&cfg.AckTimeout, 10*time.Second)
	def(&cfg.AcceptGrace, 24*time.Hour)
	def(&cfg.RejectTTL, time.Hour)
	switch {
	case cfg.Batch < 1 || cfg.Batch > 100000:
		return nil, fmt.Errorf("push config: Batch=%d, want 1..100000", cfg.Batch)
	case cfg.ScriptBatch < 1 || cfg.ScriptBatch > 1024:
		return nil, fmt.Errorf("push config: ScriptBatch=%d, want 1..1024", cfg.ScriptBatch)
	case cfg.Depth < 1 || cfg.Depth > 64:
		return nil, fmt.Errorf("push config: Depth=%d, want 1..64", cfg.Depth)
	case cfg.Lease < 100*time.Millisecond:
		return nil, fmt.Errorf("push config: Lease=%s, want at least 100ms", cfg.Lease)
	}
	if cfg.Owner == "" {
		cfg.Owner = "gw-" + randomHex(8)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, pg: pg, rdb: rdb, kcl: kcl, log: log, kick: make(chan struct{}, 1)}, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Progress is a push as GET .../pushes/{push_id} shows it.
type Progress struct {
	CampaignID string            `json:"campaign_id"`
	PushID     string            `json:"push_id"`
	Tiers      map[string]string `json:"tiers"`
	State      string            `json:"state"`
	Reason     string            `json:"reason,omitempty"`
	Users      Users             `json:"users"`
	CreatedAt  time.Time         `json:"created_at"`
	FinishedAt *time.Time        `json:"finished_at,omitempty"`
}

// Users are a push's counts: total, issued, refused by reason, and pending (not yet
// decided).
type Users struct {
	Total   int64            `json:"total"`
	Issued  int64            `json:"issued"`
	Refused map[string]int64 `json:"refused"`
	Pending int64            `json:"pending"`
}

// ValidPushID: 1-64 characters of [A-Za-z0-9._-] (the id of a push:<id> channel).
func ValidPushID(id string) bool {
	return id != "" && claim.ValidChannel("push:"+id)
}

// Body is the PUT body.
type Body struct {
	Tiers map[string]string `json:"tiers"`
}

// DecodeBody parses and checks a PUT body (400 naming the field).
func DecodeBody(b []byte) (*Body, error) {
	var body Body
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return nil, &FieldError{Field: strings.Trim(f, `"`), Msg: "unknown field"}
		}
		return nil, &FieldError{Field: "tiers", Msg: "want a JSON object {\"tiers\":{\"<segment>\":\"<sku>\",...}}: " + err.Error()}
	}
	if dec.More() {
		return nil, &FieldError{Field: "tiers", Msg: "trailing data after the JSON object"}
	}
	if len(body.Tiers) == 0 {
		return nil, &FieldError{Field: "tiers", Msg: "required: at least one segment and its SKU"}
	}
	if len(body.Tiers) > MaxTiers {
		return nil, &FieldError{Field: "tiers", Msg: fmt.Sprintf("at most %d tiers", MaxTiers)}
	}
	for seg, sku := range body.Tiers {
		if !catalog.ValidID(seg) {
			return nil, &FieldError{Field: "tiers", Msg: fmt.Sprintf("segment %q: 1-64 characters of [A-Za-z0-9._:-]", seg)}
		}
		if !catalog.ValidID(sku) {
			return nil, &FieldError{Field: "tiers." + seg, Msg: fmt.Sprintf("sku %q: 1-64 characters of [A-Za-z0-9._:-]", sku)}
		}
	}
	return &body, nil
}

// digest is the SHA-256 of the canonical tiers (sorted by segment).
func (b *Body) digest() string {
	segs := b.segments()
	h := sha256.New()
	for _, s := range segs {
		h.Write([]byte(s + "\t" + b.Tiers[s] + "\n"))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (b *Body) segments() []string {
	segs := make([]string, 0, len(b.Tiers))
	for s := range b.Tiers {
		segs = append(segs, s)
	}
	sort.Strings(segs)
	return segs
}

// Put makes a push, or answers the one with this push_id. created reports a new push.
// A new push is held (push.lua) before Put returns: a Refusal means nothing was taken.
func (s *Service) Put(ctx context.Context, campaign, pushID string, body *Body, actor string) (p *Progress, created bool, err error) {
	if !ValidPushID(pushID) {
		return nil, false, &FieldError{Field: "push_id", Msg: "1-64 characters of [A-Za-z0-9._-]"}
	}
	digest := body.digest()
	segs := body.segments()
	skus := make([]string, len(segs))
	for i, seg := range segs {
		skus[i] = body.Tiers[seg]
	}
	err = pgx.BeginFunc(ctx, s.pg, func(tx pgx.Tx) error {
		var kind string
		if err := tx.QueryRow(ctx, `SELECT kind FROM campaigns WHERE id = $1 FOR SHARE`, campaign).Scan(&kind); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return catalog.ErrNotFound
			}
			return err
		}
		var prev string
		err := tx.QueryRow(ctx, `SELECT digest FROM pushes WHERE campaign_id = $1 AND push_id = $2`, campaign, pushID).Scan(&prev)
		if err == nil {
			if prev != digest {
				return &ConflictError{Field: "tiers", Msg: "push " + pushID + " exists with other tiers; a push_id names one push"}
			}
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if kind != "voucher" {
			return &FieldError{Field: "campaign_id", Msg: "a push issues vouchers: the campaign's kind is " + kind}
		}
		known, err := set(ctx, tx, `SELECT name FROM segments WHERE name = ANY($1)`, segs)
		if err != nil {
			return err
		}
		for _, seg := range segs {
			if !known[seg] {
				return &FieldError{Field: "tiers." + seg, Msg: "unknown segment " + seg}
			}
		}
		have, err := set(ctx, tx, `SELECT sku FROM campaign_skus WHERE campaign_id = $2 AND sku = ANY($1)`, skus, campaign)
		if err != nil {
			return err
		}
		for i, seg := range segs {
			if !have[skus[i]] {
				return &FieldError{Field: "tiers." + seg, Msg: "unknown sku " + skus[i] + " in campaign " + campaign}
			}
		}
		tiers, _ := json.Marshal(body.Tiers)
		if _, err := tx.Exec(ctx, `INSERT INTO pushes (campaign_id, push_id, tiers, digest, nonce, actor)
			VALUES ($1, $2, $3, $4, $5, $6)`, campaign, pushID, tiers, digest, randomHex(16), actor); err != nil {
			return err
		}
		// The users are fixed now: one row per user, the SKU of the first tier (by
		// segment name) the user is in, so a user in two tiers gets one voucher.
		tag, err := tx.Exec(ctx, `INSERT INTO push_users (campaign_id, push_id, user_id, sku)
			SELECT DISTINCT ON (m.user_id) $1, $2, m.user_id, t.sku
			FROM segment_members m JOIN unnest($3::text[], $4::text[]) WITH ORDINALITY t(seg, sku, o) ON m.segment = t.seg
			ORDER BY m.user_id, t.o`, campaign, pushID, segs, skus)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE pushes SET total = $3 WHERE campaign_id = $1 AND push_id = $2`,
			campaign, pushID, tag.RowsAffected()); err != nil {
			return err
		}
		created = true
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if created {
		if err := s.hold(ctx, campaign, pushID); err != nil {
			return nil, true, err
		}
		s.Kick()
	}
	p, err = s.Get(ctx, campaign, pushID)
	if err == nil && p.State == StateRefused {
		return p, created, &Refusal{Reason: p.Reason, Progress: p}
	}
	return p, created, err
}

func set(ctx context.Context, tx pgx.Tx, q string, args ...any) (map[string]bool, error) {
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out[v] = true
	}
	return out, rows.Err()
}

// Kick makes the runner look for work now.
func (s *Service) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Get reads a push's progress.
func (s *Service) Get(ctx context.Context, campaign, pushID string) (*Progress, error) {
	p := &Progress{CampaignID: campaign, PushID: pushID}
	var tiers, refused []byte
	var reason *string
	err := s.pg.QueryRow(ctx, `SELECT tiers, state, reason, total, issued, refused, created_at, finished_at
		FROM pushes WHERE campaign_id = $1 AND push_id = $2`, campaign, pushID).
		Scan(&tiers, &p.State, &reason, &p.Users.Total, &p.Users.Issued, &refused, &p.CreatedAt, &p.FinishedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if reason != nil {
		p.Reason = *reason
	}
	_ = json.Unmarshal(tiers, &p.Tiers)
	p.Users.Refused = map[string]int64{}
	_ = json.Unmarshal(refused, &p.Users.Refused)
	p.Users.Pending = p.Users.Total - p.Users.Issued
	for _, n := range p.Users.Refused {
		p.Users.Pending -= n
	}
	return p, nil
}

// hold holds a push in state escrowing: the business line's free budget is checked
// (a read: that slot is not the campaign's, see DESIGN.md "Push"), then push.lua holds
// the units and the budget in the campaign's slot, all or nothing. The row becomes
// running, or refused with the reason (its users are dropped: nothing was taken).
func (s *Service) hold(ctx context.Context, campaign, pushID string) error {
	var state string
	if err := s.pg.QueryRow(ctx, `SELECT state FROM pushes WHERE campaign_id = $1 AND push_id = $2`,
		campaign, pushID).Scan(&state); err != nil {
		return err
	}
	if state != StateEscrowing {
		return nil
	}
	rows, err := s.pg.Query(ctx, `SELECT u.sku, count(*), max(k.value) FROM push_users u
		JOIN campaign_skus k ON k.campaign_id = u.campaign_id AND k.sku = u.sku
		WHERE u.campaign_id = $1 AND u.push_id = $2 GROUP BY u.sku ORDER BY u.sku`, campaign, pushID)
	if err != nil {
		return err
	}
	var skus []string
	var units []int64
	var amount int64
	for rows.Next() {
		var sku string
		var n, v int64
		if err := rows.Scan(&sku, &n, &v); err != nil {
			rows.Close()
			return err
		}
		skus, units, amount = append(skus, sku), append(units, n), amount+n*v
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	reason := ""
	if len(skus) > 0 {
		bl, err := s.rdb.HGet(ctx, rkeys.Meta(campaign), "bl").Result()
		if err != nil {
			return fmt.Errorf("%w: campaign %s in Redis: %v", ErrUnavailable, campaign, err)
		}
		b, err := s.rdb.HMGet(ctx, rkeys.BusinessLine(bl), "budget", "spent").Result()
		if err != nil {
			return fmt.Errorf("%w: business line %s: %v", ErrUnavailable, bl, err)
		}
		if b[0] == nil {
			return fmt.Errorf("%w: business line %s is being rebuilt", ErrUnavailable, bl)
		}
		if asInt(b[0])-asInt(b[1]) < amount {
			reason = "budget_exhausted"
		} else {
			keys := []string{rkeys.Meta(campaign), rkeys.Pushes(campaign)}
			args := []any{"hold", pushID, len(skus)}
			for i, sku := range skus {
				keys = append(keys, rkeys.SKU(campaign, sku))
				args = append(args, sku, units[i])
			}
			res, err := scripts.Push.Run(ctx, s.rdb, keys, args...).Slice()
			if err != nil {
				return fmt.Errorf("%w: push.lua hold: %v", ErrUnavailable, err)
			}
			switch asInt(res[0]) {
			case scripts.PushHeld:
			case scripts.PushRefused:
				reason, _ = res[1].(string)
			case scripts.PushNotWarm:
				return fmt.Errorf("%w: campaign %s is being rebuilt", ErrUnavailable, campaign)
			case scripts.PushReleased:
				reason = "released"
			}
		}
	}
	if reason != "" {
		_, err := s.pg.Exec(ctx, `WITH d AS (DELETE FROM push_users WHERE campaign_id = $1 AND push_id = $2)
			UPDATE pushes SET state = 'refused', reason = $3, updated_at = now(), finished_at = now(), lease_owner = NULL
			WHERE campaign_id = $1 AND push_id = $2 AND state = 'escrowing'`, campaign, pushID, reason)
		return err
	}
	_, err = s.pg.Exec(ctx, `UPDATE pushes SET state = 'running', updated_at = now()
		WHERE campaign_id = $1 AND push_id = $2 AND state = 'escrowing'`, campaign, pushID)
	return err
}

func asInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		var n int64
		fmt.Sscan(x, &n)
		return n
	}
	return 0
}
