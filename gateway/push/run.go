package push

// The runner: takes a push's lease, issues its users batch by batch from the cursor,
// persists the cursor and the counts after each batch is durable, and releases what is
// left of the escrow at the end. A crash anywhere leaves the cursor at the last durable
// batch; the next runner (this gateway restarted, or another once the lease ran out)
// redoes the batch after it, where claim.lua replays every claim already decided.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// errLeaseLost: another runner owns the push now; this one stops.
var errLeaseLost = errors.New("push: lease lost")

// Run runs pushes until ctx ends: every Poll (or at once after Kick) it takes the
// lease of one push that needs work and runs it to the end.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	for {
		for ctx.Err() == nil {
			did, err := s.RunOnce(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("push run failed; retried at the next poll", "err", err)
			}
			if !did || err != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
	}
}

// RunOnce takes the lease of one push that needs work (escrowing or running, lease
// free or its own) and runs it until it is done, ctx ends, or a step fails. It reports
// whether it found one.
func (s *Service) RunOnce(ctx context.Context) (bool, error) {
	var campaign, pushID, state string
	err := s.pg.QueryRow(ctx, `UPDATE pushes SET lease_owner = $1, lease_until = now() + $2::interval
		WHERE (campaign_id, push_id) = (SELECT campaign_id, push_id FROM pushes
			WHERE state IN ('escrowing', 'running') AND (lease_until IS NULL OR lease_until < now() OR lease_owner = $1)
			ORDER BY updated_at LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING campaign_id, push_id, state`, s.cfg.Owner, s.cfg.Lease.String()).Scan(&campaign, &pushID, &state)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		return false, err
	}
	if state == StateEscrowing {
		if err := s.hold(ctx, campaign, pushID); err != nil {
			return true, err
		}
	}
	return true, s.run(ctx, campaign, pushID)
}

type member struct{ user, sku string }

// run issues the push's users from its cursor on. Up to Depth batches are in flight at
// once (read in order from the cursor, each decided, produced and marked on its own),
// so one batch's produce and mark wait, the Postgres read and the cursor write overlap
// the next batches' claim.lua calls. The cursor still moves only in order and only past
// a batch that is durable: batch k is counted after every batch before it was, so a
// crash leaves the cursor at a point below which every user is decided and durable;
// the batches in flight past it were never counted, and the next runner redoes them
// (claim.lua replays what they decided: issued once, counted once).
func (s *Service) run(ctx context.Context, campaign, pushID string) error {
	var state, cursor, nonce string
	var issued int64
	var refusedJSON []byte
	if err := s.pg.QueryRow(ctx, `SELECT state, cursor_user, nonce, issued, refused FROM pushes
		WHERE campaign_id = $1 AND push_id = $2`, campaign, pushID).Scan(&state, &cursor, &nonce, &issued, &refusedJSON); err != nil {
		return err
	}
	if state != StateRunning {
		return nil
	}
	refused := map[string]int64{}
	_ = json.Unmarshal(refusedJSON, &refused)
	is := issuer{s: s, campaign: campaign, pushID: pushID, nonce: nonce, channel: "push:" + pushID}

	// The batches in flight end before run returns, whatever it returns: a runner that
	// stopped leaves nothing running behind it.
	bctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	type inflight struct {
		last string
		got  tally
		err  error
		done chan struct{}
	}
	var window []*inflight
	read, exhausted := cursor, false
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		for !exhausted && len(window) < s.cfg.Depth {
			batch, err := s.next(ctx, campaign, pushID, read)
			if err != nil {
				return err
			}
			if len(batch) == 0 {
				exhausted = true
				break
			}
			f := &inflight{last: batch[len(batch)-1].user, done: make(chan struct{})}
			bi := is // each batch routes on its own copy (route writes bl and seg)
			wg.Go(func() {
				defer close(f.done)
				f.got, f.err = bi.issue(bctx, batch)
			})
			window = append(window, f)
			read = f.last
		}
		if len(window) == 0 {
			return s.finish(ctx, campaign, pushID)
		}
		f := window[0]
		select {
		case <-f.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		window = window[1:]
		if f.err != nil {
			return f.err
		}
		for r, n := range f.got.refused {
			refused[r] += n
		}
		rj, _ := json.Marshal(refused)
		// The cursor and the counts move together, and only from the cursor this runner
		// read: a runner that lost its lease (and whose batch another redid) writes
		// nothing.
		tag, err := s.pg.Exec(ctx, `UPDATE pushes SET cursor_user = $4, issued = issued + $5, refused = $6,
			updated_at = now(), lease_until = now() + $7::interval
			WHERE campaign_id = $1 AND push_id = $2 AND lease_owner = $3 AND cursor_user = $8`,
			campaign, pushID, s.cfg.Owner, f.last, f.got.issued, rj, s.cfg.Lease.String(), cursor)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errLeaseLost
		}
		cursor = f.last
	}
}

func (s *Service) next(ctx context.Context, campaign, pushID, cursor string) ([]member, error) {
	rows, err := s.pg.Query(ctx, `SELECT user_id, sku FROM push_users
		WHERE campaign_id = $1 AND push_id = $2 AND user_id > $3 ORDER BY user_id LIMIT $4`,
		campaign, pushID, cursor, s.cfg.Batch)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []member
	for rows.Next() {
		var m member
		if err := rows.Scan(&m.user, &m.sku); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// finish releases what is left of the escrow (units of users who were refused) and
// marks the push done.
func (s *Service) finish(ctx context.Context, campaign, pushID string) error {
	rows, err := s.pg.Query(ctx, `SELECT DISTINCT sku FROM push_users WHERE campaign_id = $1 AND push_id = $2 ORDER BY sku`,
		campaign, pushID)
	if err != nil {
		return err
	}
	var skus []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return err
		}
		skus = append(skus, k)
	}
	rows.Close()
	keys := []string{rkeys.Meta(campaign), rkeys.Pushes(campaign)}
	args := []any{"release", pushID, len(skus)}
	for _, k := range skus {
		keys = append(keys, rkeys.SKU(campaign, k))
		args = append(args, k, 0)
	}
	if err := scripts.Push.Run(ctx, s.rdb, keys, args...).Err(); err != nil {
		return fmt.Errorf("%w: push.lua release: %v", ErrUnavailable, err)
	}
	_, err = s.pg.Exec(ctx, `UPDATE pushes SET state = 'done', updated_at = now(), finished_at = now(), lease_owner = NULL
		WHERE campaign_id = $1 AND push_id = $2 AND state = 'running'`, campaign, pushID)
	if err == nil {
		s.log.Info("push done", "campaign", campaign, "push", pushID)
	}
	return err
}

// RequestID is the request_id of the push's claim for user: derived from the push's
// nonce and the user, so every attempt for that user is the same request (claim.lua
// decides it once and replays it after), and no client can guess it.
func RequestID(nonce, user string) string {
	h := sha256.Sum256([]byte(nonce + "\x00" + user))
	return "push-" + hex.EncodeToString(h[:16])
}

type issuer struct {
	s                                *Service
	campaign, pushID, nonce, channel string
	bl, seg                          string
}

type tally struct {
	issued  int64
	refused map[string]int64
}

// pendingClaim is one user's claim through a round.
type pendingClaim struct {
	m       member
	reqID   string
	claimID string
	out     claim.Outcome
	rec     claim.Record
	done    bool
}

// maxRounds bounds the rounds a batch is retried in (a void, a stale route, an
// in-flight record of a dead runner) before the step fails and is redone later.
const maxRounds = 8

// issue decides and makes durable one batch: every user ends issued (accepted and
// durable, now or before) or refused with a reason, or the batch fails as a whole
// (nothing counted; the batch is redone from the same cursor).
func (is *issuer) issue(ctx context.Context, batch []member) (tally, error) {
	t := tally{refused: map[string]int64{}}
	todo := make([]*pendingClaim, len(batch))
	for i, m := range batch {
		todo[i] = &pendingClaim{m: m, reqID: RequestID(is.nonce, m.user)}
	}
	if err := is.route(ctx); err != nil {
		return t, err
	}
	for round := 0; len(todo) > 0; round++ {
		if round == maxRounds {
			return t, fmt.Errorf("%w: %d claims still undecided after %d rounds", ErrUnavailable, len(todo), maxRounds)
		}
		if round > 0 {
			select {
			case <-ctx.Done():
				return t, ctx.Err()
			case <-time.After(time.Duration(round) * 50 * time.Millisecond):
			}
		}
		var again, fresh []*pendingClaim
		for i := 0; i < len(todo); i += is.s.cfg.ScriptBatch {
			chunk := todo[i:min(i+is.s.cfg.ScriptBatch, len(todo))]
			if err := is.script(ctx, chunk); err != nil {
				return t, err
			}
			for _, p := range chunk {
				switch o := &p.out; {
				case o.Code == claim.CodeAccepted && o.Replayed:
					t.issued++
				case o.Code == claim.CodeAccepted:
					fresh = append(fresh, p)
				case o.Code == claim.CodeInFlight:
					// An attempt of a runner that died (or lost its lease) between the
					// script and the durable mark. Nobody was told it was issued: void it
					// (if the settler confirmed it first the void says so, and it is
					// issued) and decide it again.
					res, err := is.void(ctx, p.m, p.reqID, o.ClaimID)
					if err != nil {
						return t, err
					}
					if res == scripts.VoidConfirmed {
						t.issued++
					} else {
						again = append(again, p)
					}
				case o.Code == claim.CodeStale:
					if err := is.route(ctx); err != nil {
						return t, err
					}
					again = append(again, p)
				case claim.IsRejection(o.Code):
					t.refused[claim.ReasonOf(o.Code)]++
				default:
					r, _ := claim.ResultOf(o.Code)
					if r.Kind == claim.KindRetry {
						again = append(again, p)
					} else {
						// unknown_sku, key reuse: refused with that word.
						t.refused[claim.ReasonOf(o.Code)]++
					}
				}
			}
		}
		n, redo, err := is.durable(ctx, fresh)
		if err != nil {
			return t, err
		}
		t.issued += n
		todo = append(again, redo...)
	}
	return t, nil
}

// route reads the campaign's business line and segment (claim.lua checks them: a
// stale copy answers STALE).
func (is *issuer) route(ctx context.Context) error {
	m, err := is.s.rdb.HMGet(ctx, rkeys.Meta(is.campaign), "bl", "seg").Result()
	if err != nil {
		return fmt.Errorf("%w: campaign %s: %v", ErrUnavailable, is.campaign, err)
	}
	is.bl, _ = m[0].(string)
	is.seg, _ = m[1].(string)
	if is.bl == "" {
		return fmt.Errorf("%w: campaign %s is not warm", ErrUnavailable, is.campaign)
	}
	return nil
}

// script decides chunk in one claim.lua call.
func (is *issuer) script(ctx context.Context, chunk []*pendingClaim) error {
	cfg := &is.s.cfg
	keys, args := claim.AppendHeader(make([]string, 0, len(chunk)*claim.BatchKeysPerClaim),
		make([]any, 0, claim.BatchHeaderArgs+len(chunk)*claim.BatchArgsPerClaim), len(chunk),
		cfg.AcceptGrace.Milliseconds(), cfg.RejectTTL.Milliseconds())
	for _, p := range chunk {
		p.claimID = claimer.NewClaimID(is.campaign)
		k := rkeys.ClaimKeys(is.campaign, p.m.sku, p.reqID, is.bl, is.seg, DeviceID, IP, p.m.user)
		a := claim.Args{RequestID: p.reqID, ClaimID: p.claimID, CampaignID: is.campaign, SKU: p.m.sku,
			UserID: p.m.user, DeviceID: DeviceID, IP: IP, Channel: is.channel}
		keys, args = claim.AppendClaim(keys, args, &k, &a)
	}
	sctx, cancel := context.WithTimeout(ctx, cfg.RedisTimeout)
	res, err := scripts.Claim.Run(sctx, is.s.rdb, keys, args...).Slice()
	cancel()
	if err == nil && !claim.ResultsFor(res, len(chunk)) {
		err = fmt.Errorf("claim.lua answered %d values for %d claims", len(res), len(chunk))
	}
	if err != nil {
		// The call may have run: its accepted claims are A, never produced; the next
		// attempt finds them in flight and voids them (or the relay does past MinAge).
		return fmt.Errorf("%w: claim.lua: %v", ErrUnavailable, err)
	}
	for i, p := range chunk {
		claim.DecodeResult(res, i, &p.out)
	}
	return nil
}

// durable produces the fresh claims, waits for every acknowledgement, and marks them D
// in one durable.lua call. It returns how many are durable, and those to decide again
// (their produce or mark failed, and they were voided).
func (is *issuer) durable(ctx context.Context, fresh []*pendingClaim) (int64, []*pendingClaim, error) {
	if len(fresh) == 0 {
		return 0, nil, nil
	}
	krs := make([]*kgo.Record, len(fresh))
	for i, p := range fresh {
		o := &p.out
		p.rec = claim.Record{Version: claim.Version, ClaimID: o.ClaimID, RequestID: p.reqID, CampaignID: is.campaign,
			BusinessLine: is.bl, SKU: p.m.sku, UserID: p.m.user, DeviceID: DeviceID, IP: IP, Value: o.Value,
			ClaimedAtMs: o.ClaimedAtMs, ExpiresAtMs: o.ExpiresAtMs, OutboxID: o.OutboxID, Channel: is.channel,
			Code: o.PartnerCode}
		krs[i] = &kgo.Record{Topic: kafkaopt.ClaimsTopic, Key: []byte(is.campaign), Value: p.rec.AppendJSON(nil)}
	}
	pctx, cancel := context.WithTimeout(ctx, is.s.cfg.AckTimeout)
	results := is.s.kcl.ProduceSync(pctx, krs...)
	cancel()
	var redo, acked []*pendingClaim
	for i, r := range results {
		if r.Err != nil {
			redo = append(redo, fresh[i])
		} else {
			acked = append(acked, fresh[i])
		}
	}
	var n int64
	if len(acked) > 0 {
		keys := make([]string, len(acked))
		args := make([]any, len(acked))
		for i, p := range acked {
			keys[i], args[i] = rkeys.Request(is.campaign, p.reqID), p.out.ClaimID
		}
		mctx, cancel := context.WithTimeout(ctx, is.s.cfg.RedisTimeout)
		res, err := scripts.Durable.Run(mctx, is.s.rdb, keys, args...).Int64Slice()
		cancel()
		if err != nil || len(res) != len(acked) {
			// Unknown whether marked: the next round (or the next runner) finds each one
			// D (replayed: issued) or A (in flight: voided and decided again).
			return n, nil, fmt.Errorf("%w: durable.lua: %v", ErrUnavailable, err)
		}
		for i, p := range acked {
			if res[i] == 1 {
				n++
			} else {
				redo = append(redo, p)
			}
		}
	}
	var again []*pendingClaim
	for _, p := range redo {
		res, err := is.void(ctx, p.m, p.reqID, p.out.ClaimID)
		if err != nil {
			return n, nil, err
		}
		if res == scripts.VoidConfirmed {
			n++
		} else {
			again = append(again, p)
		}
	}
	return n, again, nil
}

// void gives back what an undecided claim of the push took (void.lua with the push's
// escrow and the SKU's code pool).
func (is *issuer) void(ctx context.Context, m member, reqID, claimID string) (int, error) {
	vctx, cancel := context.WithTimeout(ctx, is.s.cfg.RedisTimeout)
	defer cancel()
	res, err := scripts.Void.Run(vctx, is.s.rdb, rkeys.VoidKeys(is.campaign, m.sku, reqID, is.bl),
		claimID, m.user, is.channel).Int()
	if err != nil {
		return 0, fmt.Errorf("%w: void.lua: %v", ErrUnavailable, err)
	}
	return res, nil
}
