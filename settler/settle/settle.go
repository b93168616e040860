// Package settle owns the settler's consume loop: it reads accepted claims from
// flash.claims, asks Redis which of them to write (confirm.lua, the arbiter against the
// gateway's void.lua), writes them and their reserve ledger entries to Postgres in one
// transaction per batch, trims the campaign's outbox and inflight entries, and only then
// commits the batch's Kafka offsets.
//
// The order is the whole design: offsets are committed after Postgres commits, so a
// crash at any point redelivers the batch, and every write is idempotent (claim_id is
// the anchor), so redelivery is harmless. Redis and Postgres failures are retried with
// a bounded backoff on the same batch for as long as they last; the settler never
// commits past a claim it has not written.
package settle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// writeChosen is the Postgres write method the settler uses: in BenchmarkWrite unnest
// was fastest for redelivery, level with a multi-row VALUES insert for new rows, with
// half its allocations, and ahead of CopyFrom through a staging table (the numbers and
// the reasoning are in write_bench_test.go).
const writeChosen = writeUnnest

// Settler consumes flash.claims into Postgres. Run it once; Close it after Run returns.
type Settler struct {
	cfg    Config
	kcl    *kgo.Client
	rdb    *redis.Client
	pg     *pgxpool.Pool
	log    *slog.Logger
	m      *Metrics
	method writeMethod
	cat    *catalogCache // campaigns' business lines and SKU values, for validate

	// retrying counts the batches waiting to retry a failed Redis or Postgres call:
	// while it is above zero the settler is alive but not settling, so not ready.
	retrying atomic.Int32
}

// New validates cfg and builds a settler with its own group consumer (the options of
// kafkaopt.Consumer: manual commits, rebalances blocked while a batch is in hand).
// Nothing is consumed until Run.
func New(cfg Config, rdb *redis.Client, pg *pgxpool.Pool, m *Metrics, log *slog.Logger) (*Settler, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if rdb == nil {
		return nil, fieldErr("rdb", "a Redis client is required")
	}
	if pg == nil {
		return nil, fieldErr("pg", "a Postgres pool is required")
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Settler{cfg: cfg, rdb: rdb, pg: pg, log: log, m: m, method: writeChosen,
		cat: newCatalogCache(pg, catalogTTL, catalogMax)}
	opts := append(kafkaopt.Consumer(cfg.Brokers, cfg.Group),
		kgo.ConsumeTopics(cfg.Topic), // replaces the topic kafkaopt.Consumer set
		kgo.FetchMaxWait(cfg.PollWait),
		kgo.FetchMinBytes(int32(cfg.FetchMinBytes)),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.WithLogger(kgoLogger{log}),
		// The same client sets rejected records aside (reject.go): bounded, and the
		// rejected topic is created on first use where the broker allows it.
		kgo.RecordDeliveryTimeout(cfg.RejectTimeout),
		kgo.ProduceRequestTimeout(cfg.RejectTimeout),
		kgo.AllowAutoTopicCreation(),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			log.Info("partitions assigned", "group", cfg.Group, "partitions", a[cfg.Topic])
		}),
		// No commit on revoke (the usual advice with manual commits): with
		// BlockRebalanceOnPoll a revoke only runs between batches, when every settled
		// batch is already committed, and a batch abandoned on shutdown must stay
		// uncommitted so the next settler gets it again.
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, r map[string][]int32) {
			log.Info("partitions revoked", "group", cfg.Group, "partitions", r[cfg.Topic])
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, l map[string][]int32) {
			log.Warn("partitions lost (their uncommitted records go to another member)", "group", cfg.Group, "partitions", l[cfg.Topic])
		}),
	)
	kcl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("settler: kafka client: %w", err)
	}
	s.kcl = kcl
	return s, nil
}

// Close leaves the group and closes the Kafka client. Call it after Run returned; the
// Redis client and Postgres pool belong to the caller.
func (s *Settler) Close() { s.kcl.CloseAllowingRebalance() }

// Ready reports whether the settler can settle: it is not backing off after a failure,
// its consumer has joined the group, and Redis, Postgres and a broker answer.
func (s *Settler) Ready(ctx context.Context) error {
	if s.retrying.Load() > 0 {
		return errors.New("retrying a batch after a Redis or Postgres failure")
	}
	if member, gen := s.kcl.GroupMetadata(); member == "" || gen < 0 {
		return fmt.Errorf("consumer has not joined group %s yet", s.cfg.Group)
	}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	if err := s.pg.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if err := s.kcl.Ping(ctx); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	return nil
}

// Run consumes until ctx is cancelled, then finishes the batch in hand (settle and
// commit, within DrainTimeout) and returns nil. It returns an error only when that last
// batch could not be settled in time; its offsets are then left uncommitted.
func (s *Settler) Run(ctx context.Context) error {
	for {
		if ctx.Err() != nil {
			return nil
		}
		fetches := s.kcl.PollRecords(ctx, s.cfg.MaxBatch*s.cfg.Writers)
		if fetches.IsClientClosed() {
			return nil
		}
		failed := false
		fetches.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			failed = true
			s.m.fetchErrors.Inc()
			s.log.Warn("poll", "topic", topic, "partition", p, "err", err)
		})
		recs := fetches.Records()
		if len(recs) == 0 {
			s.kcl.AllowRebalance()
			if failed {
				// A poll that only reports errors returns at once; do not spin on it.
				sleep(ctx, s.cfg.RetryMin)
			}
			continue
		}
		err := s.settle(ctx, recs)
		s.kcl.AllowRebalance()
		if err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// drainContext is the context a batch works under: it is not cancelled with ctx (a
// batch in hand is finished on SIGTERM) but DrainTimeout after it.
func (s *Settler) drainContext(ctx context.Context) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var timer atomic.Pointer[time.Timer]
	stop := context.AfterFunc(ctx, func() { timer.Store(time.AfterFunc(s.cfg.DrainTimeout, cancel)) })
	return wctx, func() {
		stop()
		if t := timer.Load(); t != nil {
			t.Stop()
		}
		cancel()
	}
}

// settle takes one poll's records through confirm, write, cleanup and commit. The
// records are split into at most Writers batches of at most MaxBatch claims, settled
// concurrently; the poll's offsets are committed only after every batch has committed
// in Postgres (a batch still failing when the drain time runs out leaves the whole poll
// uncommitted, to be redelivered).
func (s *Settler) settle(ctx context.Context, recs []*kgo.Record) error {
	start := time.Now()
	wctx, cancel := s.drainContext(ctx)
	defer cancel()
	s.m.consumed.Add(float64(len(recs)))

	items, rejects := s.decodeAll(recs)
	where := func() string {
		return fmt.Sprintf("%d records from %s partition %d offset %d", len(recs), s.cfg.Topic, recs[0].Partition, recs[0].Offset)
	}
	// Every record is checked against the contract and the catalog before anything
	// reaches Redis or Postgres, and before duplicates are dropped (a forged copy of a
	// claim must not displace the real one).
	items, bad, err := s.validate(wctx, items)
	if err != nil {
		return fmt.Errorf("settle %s: check records: %w (offsets not committed)", where(), err)
	}
	rejects = append(rejects, bad...)
	items, dups := dedup(items)
	// Duplicates inside the poll (a redelivery next to the original) are never
	// confirmed or written; they count as what they are.
	if dups > 0 {
		s.m.duplicates.Add(float64(dups))
	}
	newest, err := s.settleItems(wctx, items)
	if err != nil {
		return fmt.Errorf("settle %s: %w (offsets not committed)", where(), err)
	}
	for _, it := range items {
		if it.refused != nil {
			rejects = append(rejects, rejected{rec: it.src, reason: reasonPostgresRefus, err: it.refused})
		}
	}
	// What is set aside is on the rejected topic before the offsets pass it.
	if err := s.setAside(wctx, rejects); err != nil {
		return fmt.Errorf("settle %s: set %d records aside on %s: %w (offsets not committed)", where(), len(rejects), s.cfg.RejectTopic, err)
	}

	if err := s.kcl.CommitRecords(wctx, recs...); err != nil {
		// The poll is in Postgres; if this commit is lost it is redelivered and
		// ignored as duplicates.
		s.m.commitErrors.Inc()
		s.log.Warn("offset commit failed; the batch will be redelivered and deduplicated", "batch", where(), "err", err)
	} else {
		now := time.Now()
		s.m.lastCommitted.Set(float64(now.UnixMilli()) / 1000)
		if newest > 0 {
			s.m.commitLag.Set(now.Sub(time.UnixMilli(newest)).Seconds())
		}
	}
	s.m.batchClaims.Observe(float64(len(recs)))
	s.m.batchSeconds.Observe(time.Since(start).Seconds())
	return nil
}

// decodeAll decodes a poll's records in order. A record that is not a storable claim
// can never become one: it is counted and returned to be set aside, and committed
// with its poll like any other, so one bad record never blocks its partition.
func (s *Settler) decodeAll(recs []*kgo.Record) (items []*item, rejects []rejected) {
	slab := make([]item, 0, len(recs))
	items = make([]*item, 0, len(recs))
	for _, r := range recs {
		rec, err := decode(r.Value)
		if err != nil {
			s.m.decodeErrors.Inc()
			rejects = append(rejects, rejected{rec: r, reason: reasonUndecodable, err: err})
			continue
		}
		slab = append(slab, item{rec: rec, partition: r.Partition, offset: r.Offset, src: r})
		items = append(items, &slab[len(slab)-1])
	}
	return items, rejects
}

// dedup drops a claim_id seen earlier in the poll, so each claim is confirmed and
// written by exactly one batch. dups is how many were dropped as repeats.
func dedup(items []*item) (out []*item, dups int) {
	out = items[:0]
	seen := make(map[string]struct{}, len(items))
	for _, it := range items {
		if _, dup := seen[it.rec.ClaimID]; dup {
			dups++
			continue
		}
		seen[it.rec.ClaimID] = struct{}{}
		out = append(out, it)
	}
	return out, dups
}

// settleItems settles one poll's claims: split into batches of at most MaxBatch, each
// settled by settleBatch, concurrently when there are several. It returns claimed_at
// (ms) of the newest claim written, and an error if any batch failed for good (then
// the poll must not be committed; batches that did commit are harmless to redo).
func (s *Settler) settleItems(ctx context.Context, items []*item) (int64, error) {
	chunks := split(items, s.cfg.MaxBatch)
	newest := make([]int64, len(chunks))
	errs := make([]error, len(chunks))
	if len(chunks) == 1 {
		newest[0], errs[0] = s.settleBatch(ctx, chunks[0])
	} else {
		var wg sync.WaitGroup
		for i, c := range chunks {
			wg.Go(func() { newest[i], errs[i] = s.settleBatch(ctx, c) })
		}
		wg.Wait()
	}
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return slices.Max(append(newest, 0)), nil
}

// split cuts items, in order, into the fewest batches of at most max claims, of even
// sizes (1,001 claims at 500 a batch are batches of 334, 334 and 333, not 500, 500, 1).
func split(items []*item, max int) [][]*item {
	if len(items) == 0 {
		return nil
	}
	n := (len(items) + max - 1) / max
	size := (len(items) + n - 1) / n
	out := make([][]*item, 0, n)
	for len(items) > 0 {
		k := min(size, len(items))
		out = append(out, items[:k:k])
		items = items[k:]
	}
	return out
}

// settleBatch confirms, writes and cleans up one batch, retrying Redis and Postgres
// failures until they pass or ctx ends. It returns claimed_at (ms) of the newest claim
// it wrote. It commits no offsets: that is settle's, once every batch of the poll is in.
func (s *Settler) settleBatch(ctx context.Context, items []*item) (newest int64, err error) {
	if len(items) == 0 {
		return 0, nil
	}
	groups := group(items)
	// Confirm each campaign's claims once. A campaign confirmed before a later one
	// failed keeps its answers: confirm.lua already moved those records to S, and the
	// claims it said to write must be written even if Redis changes its mind later
	// (an expired record would answer 2, a reused request_id 0).
	confirmed := 0
	err = s.retry(ctx, "confirm", s.m.redisConfirm, func(ctx context.Context) error {
		for ; confirmed < len(groups); confirmed++ {
			if err := s.confirm(ctx, &groups[confirmed]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("confirm: %w", err)
	}
	// Claims still A are neither durable nor voided: wait for their gateway's mark, and
	// void them past VoidAfter (undecided.go). None is written from A.
	if err := s.settleUndecided(ctx, groups); err != nil {
		return 0, fmt.Errorf("undecided claims: %w", err)
	}

	toWrite := make([]*item, 0, len(items))
	for _, g := range groups {
		for _, it := range g.items {
			switch it.code {
			case scripts.ConfirmSkip:
				s.m.confirmSkips.Inc()
				continue
			case scripts.ConfirmNoTrace:
				s.m.noTrace.Inc()
			}
			toWrite = append(toWrite, it)
			newest = max(newest, it.rec.ClaimedAtMs)
		}
	}
	if len(toWrite) == 0 {
		return newest, nil
	}
	// A claim Postgres refuses for good is marked refused and set aside with the poll
	// (reject.go); transient failures are retried as long as they last.
	written, err := s.writeRefusing(ctx, toWrite, refusalTries)
	if err != nil {
		return 0, fmt.Errorf("%w (rolled back)", err)
	}
	refused := 0
	for _, it := range toWrite {
		if it.refused != nil {
			refused++
		}
	}
	s.m.written.Add(float64(written))
	s.m.duplicates.Add(float64(int64(len(toWrite)-refused) - written))
	s.cleanup(ctx, groups)
	s.confirmPoints(ctx, toWrite) // points.go
	return newest, nil
}

func countItems(groups []campaignBatch) int {
	n := 0
	for _, g := range groups {
		n += len(g.items)
	}
	return n
}

// confirm runs confirm.lua for one campaign's claims and records each answer.
func (s *Settler) confirm(ctx context.Context, g *campaignBatch) error {
	keys := make([]string, len(g.items))
	args := make([]any, len(g.items))
	for i, it := range g.items {
		keys[i] = rkeys.Request(g.campaign, it.rec.RequestID)
		args[i] = it.rec.ClaimID
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
	defer cancel()
	res, err := scripts.Confirm.Run(ctx, s.rdb, keys, args...).Int64Slice()
	if err != nil {
		return fmt.Errorf("confirm %d claims of campaign %s: %w", len(g.items), g.campaign, err)
	}
	if len(res) != len(g.items) {
		return fmt.Errorf("confirm campaign %s: %d answers for %d claims", g.campaign, len(res), len(g.items))
	}
	for i, code := range res {
		switch code {
		case scripts.ConfirmSkip, scripts.ConfirmWrite, scripts.ConfirmNoTrace, scripts.ConfirmUndecided:
			g.items[i].code = int(code)
		default:
			return fmt.Errorf("confirm campaign %s: unknown answer %d", g.campaign, code)
		}
	}
	return nil
}

// cleanup deletes the written claims' outbox entries and inflight fields, one pipeline
// for the batch. It runs after Postgres committed, so a failure only leaves leftovers
// that the relay and reconciliation tolerate (both check Postgres before acting); it is
// counted and logged, and never holds back the offset commit.
func (s *Settler) cleanup(ctx context.Context, groups []campaignBatch) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	for _, g := range groups {
		outbox := make([]string, 0, len(g.items))
		claims := make([]string, 0, len(g.items))
		for _, it := range g.items {
			if it.code == scripts.ConfirmSkip {
				continue // void.lua already removed both
			}
			if it.rec.OutboxID != "" {
				outbox = append(outbox, it.rec.OutboxID)
			}
			claims = append(claims, it.rec.ClaimID)
		}
		if len(outbox) > 0 {
			pipe.XDel(ctx, rkeys.Outbox(g.campaign), outbox...)
		}
		if len(claims) > 0 {
			pipe.HDel(ctx, rkeys.Inflight(g.campaign), claims...)
		}
	}
	if pipe.Len() == 0 {
		return
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.m.redisCleanup.Inc()
		s.log.Warn("outbox/inflight cleanup failed after the claims were written; leftovers are tolerated", "err", err)
	}
}

// retry calls f until it succeeds, waiting RetryMin, then twice as long each time up to
// RetryMax, and marking the settler not ready meanwhile. It gives up only when ctx ends
// (a shutdown whose drain time ran out), returning f's last error.
func (s *Settler) retry(ctx context.Context, what string, errs prometheus.Counter, f func(context.Context) error) error {
	wait := s.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil {
			if attempt > 1 {
				s.setRetrying(-1)
				s.log.Info("recovered", "stage", what, "attempts", attempt)
			}
			return nil
		}
		errs.Inc()
		if ctx.Err() != nil {
			if attempt > 1 {
				s.setRetrying(-1)
			}
			return err
		}
		if attempt == 1 {
			s.setRetrying(1)
		}
		// The first failure and then every tenth: a long outage must not flood the log.
		if attempt == 1 || attempt%10 == 0 {
			s.log.Warn("batch failed; retrying the same batch", "stage", what, "attempt", attempt,
				"next_in", wait.String(), "err", err)
		}
		s.m.retries.Inc()
		sleep(ctx, wait)
		if ctx.Err() != nil {
			s.setRetrying(-1)
			return err
		}
		wait = min(wait*2, s.cfg.RetryMax)
	}
}

// setRetrying adds delta (+1 when a batch starts backing off, -1 when it stops) to the
// batches backing off, and mirrors "any" in the retrying gauge.
func (s *Settler) setRetrying(delta int32) {
	if s.retrying.Add(delta) > 0 {
		s.m.retrying.Set(1)
	} else {
		s.m.retrying.Set(0)
	}
}

// kgoLogger passes franz-go's warnings and errors to slog; its chatter stays out.
type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelWarn
	if level == kgo.LogLevelError {
		lvl = slog.LevelError
	}
	k.l.Log(context.Background(), lvl, "kafka: "+msg, keyvals...)
}
