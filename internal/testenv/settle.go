package testenv

// What the settlement-side tests share (outbox relay, reconciliation, expiry, Redis-loss
// recovery, the campaign report; was internal/settletest): claims decided by claim.lua
// directly (a gateway that dies right after the script and never produces), and a
// reference settler that writes claims to Postgres the way DESIGN.md describes -
// confirm.lua, one idempotent insert of the claim and its reserve entry, then the outbox
// and inflight cleanup.
//
// The reference settler consumes flash.claims by partition from the offsets it finds at
// start, handles only the campaigns a test names (the topic and Redis are shared by every
// test on the machine, so it must not confirm other tests' claims), and commits its
// progress under its own consumer group so that a catch-up check (internal/recovery)
// reads a real committed offset.

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// Accepted is what claim.lua answered for one claim.
type Accepted struct {
	Code        int
	Replayed    bool // the answer of an earlier attempt with the same request_id
	ClaimID     string
	Value       int64
	ClaimedAtMs int64
	ExpiresAtMs int64
	OutboxID    string
}

// ScriptClaim decides one claim with claim.lua directly, as a gateway does, and never
// produces it: the state a gateway leaves when it dies between the script and the
// produce (record "A", an outbox entry, an inflight entry). Its device is "d-"+user and
// its IP 127.0.0.1, on the app channel.
func ScriptClaim(ctx context.Context, rdb *redis.Client, campaign, sku, user, requestID string) (Accepted, error) {
	m, err := rdb.HMGet(ctx, rkeys.Meta(campaign), "bl", "seg").Result()
	if err != nil {
		return Accepted{}, err
	}
	bl, _ := m[0].(string)
	seg, _ := m[1].(string)
	if bl == "" {
		return Accepted{Code: claim.CodeUnknownCampaign}, nil
	}
	out, err := RunClaims(ctx, rdb, []ClaimReq{{Campaign: campaign, BusinessLine: bl, Segment: seg, SKU: sku,
		RequestID: requestID, ClaimID: NewClaimID(campaign), User: user, Device: "d-" + user, IP: "127.0.0.1"}})
	if err != nil {
		return Accepted{}, err
	}
	o := out[0]
	return Accepted{Code: o.Code, Replayed: o.Replayed, ClaimID: o.ClaimID, Value: o.Value,
		ClaimedAtMs: o.ClaimedAtMs, ExpiresAtMs: o.ExpiresAtMs, OutboxID: o.OutboxID}, nil
}

// ClaimReq is one claim a test decides with RunClaims: its campaign (with the campaign's
// business line and segment, "" for none, as the meta holds them), SKU, ids, the
// client's user, device and IP, and its channel ("" is the app).
type ClaimReq struct {
	Campaign, BusinessLine, Segment, SKU string
	RequestID, ClaimID                   string
	User, Device, IP, Channel            string
}

// RunClaims decides the claims in one claim.lua call, in the gateway's layout built by
// internal/claim (the one owner of the batch), and returns each one's named outcome.
// Nothing is produced: that is the caller's (ProduceDurable, MarkDurable) or never.
func RunClaims(ctx context.Context, rdb *redis.Client, reqs []ClaimReq) ([]claim.Outcome, error) {
	keys, args := claim.AppendHeader(nil, nil, len(reqs), (24 * time.Hour).Milliseconds(), time.Hour.Milliseconds())
	for i := range reqs {
		r := &reqs[i]
		k := rkeys.ClaimKeys(r.Campaign, r.SKU, r.RequestID, r.BusinessLine, r.Segment, r.Device, r.IP, r.User)
		keys, args = claim.AppendClaim(keys, args, &k, &claim.Args{RequestID: r.RequestID, ClaimID: r.ClaimID,
			CampaignID: r.Campaign, SKU: r.SKU, UserID: r.User, DeviceID: r.Device, IP: r.IP, Channel: r.Channel})
	}
	res, err := scripts.Claim.Run(ctx, rdb, keys, args...).Slice()
	if err != nil {
		return nil, err
	}
	if !claim.ResultsFor(res, len(reqs)) {
		return nil, fmt.Errorf("claim.lua returned %d values for %d claims", len(res), len(reqs))
	}
	out := make([]claim.Outcome, len(reqs))
	for i := range out {
		claim.DecodeResult(res, i, &out[i])
	}
	return out, nil
}

// OutboxRecords returns the claims in a campaign's outbox as flash.claims records.
func OutboxRecords(ctx context.Context, rdb *redis.Client, campaign string) ([]claim.Record, error) {
	msgs, err := rdb.XRange(ctx, rkeys.Outbox(campaign), "-", "+").Result()
	if err != nil {
		return nil, err
	}
	out := make([]claim.Record, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, recordOf(campaign, m))
	}
	return out, nil
}

func recordOf(campaign string, m redis.XMessage) claim.Record {
	return claim.FromOutbox(campaign, m.ID, m.Values)
}

// ProduceDurable publishes claims to flash.claims as the gateway does (one at a time,
// keyed by campaign) and marks each durable after its ack; unlike Produce it returns
// the error, for tests whose Redis or broker goes away under it.
func ProduceDurable(ctx context.Context, rdb *redis.Client, kcl *kgo.Client, recs ...claim.Record) error {
	for _, r := range recs {
		kr := &kgo.Record{Topic: kafkaopt.ClaimsTopic, Key: kafkaopt.ClaimKey(r.ClaimID), Value: r.AppendJSON(nil)}
		if err := kcl.ProduceSync(ctx, kr).FirstErr(); err != nil {
			return err
		}
		if err := scripts.Durable.Run(ctx, rdb, []string{rkeys.Request(r.CampaignID, r.RequestID)}, r.ClaimID).Err(); err != nil {
			return err
		}
	}
	return nil
}

// Write settles claims the way the settler does after their gateway marked them durable:
// durable.lua, confirm.lua, then one statement that
// inserts the claims not yet rows (ON CONFLICT DO NOTHING) and a reserve entry for each
// new one, then the outbox and inflight cleanup. It returns how many rows were new.
// Records must belong to one campaign.
func Write(ctx context.Context, rdb *redis.Client, pg *pgxpool.Pool, recs []claim.Record, partition int32, offsets []int64) (int64, error) {
	if len(recs) == 0 {
		return 0, nil
	}
	camp := recs[0].CampaignID
	keys := make([]string, len(recs))
	args := make([]any, len(recs))
	for i, r := range recs {
		keys[i], args[i] = rkeys.Request(camp, r.RequestID), r.ClaimID
	}
	// The records are settled as read from Kafka, so their gateway had the broker's
	// ack: mark them durable first, as it would have (confirm.lua writes nothing from A).
	if err := scripts.Durable.Run(ctx, rdb, keys, args...).Err(); err != nil {
		return 0, fmt.Errorf("durable: %w", err)
	}
	codes, err := scripts.Confirm.Run(ctx, rdb, keys, args...).Int64Slice()
	if err != nil {
		return 0, fmt.Errorf("confirm: %w", err)
	}
	var n int64
	for i, r := range recs {
		if codes[i] == scripts.ConfirmSkip {
			continue
		}
		off := int64(-1)
		if offsets != nil {
			off = offsets[i]
		}
		tag, err := pg.Exec(ctx, `WITH new AS (
			INSERT INTO claims (claim_id, request_id, campaign_id, business_line, sku, user_id, device_id, ip,
				value, claimed_at, expires_at, kafka_partition, kafka_offset, channel, partner_code)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,NULLIF($15, ''))
			ON CONFLICT DO NOTHING RETURNING claim_id, campaign_id, business_line, value)
			INSERT INTO budget_ledger (claim_id, campaign_id, business_line, kind, amount)
			SELECT claim_id, campaign_id, business_line, 'reserve', value FROM new
			ON CONFLICT (claim_id, kind) DO NOTHING`,
			r.ClaimID, r.RequestID, r.CampaignID, r.BusinessLine, r.SKU, r.UserID, r.DeviceID, r.IP,
			r.Value, r.ClaimedAt(), r.ExpiresAt(), partition, off, channelOf(r), r.Code)
		if err != nil {
			return n, fmt.Errorf("insert %s: %w", r.ClaimID, err)
		}
		n += tag.RowsAffected()
	}
	pipe := rdb.Pipeline()
	for _, r := range recs {
		if r.OutboxID != "" {
			pipe.XDel(ctx, rkeys.Outbox(camp), r.OutboxID)
		}
		pipe.HDel(ctx, rkeys.Inflight(camp), r.ClaimID)
	}
	_, err = pipe.Exec(ctx)
	return n, err
}

// channelOf is the claims.channel of a record ("app" when it names none).
func channelOf(r claim.Record) string {
	if r.Channel == "" {
		return claim.ChannelApp
	}
	return r.Channel
}

// SettleOutbox writes every claim in a campaign's outbox to Postgres as if the settler
// had read it from Kafka (without going through the broker), and returns the new rows.
func SettleOutbox(ctx context.Context, rdb *redis.Client, pg *pgxpool.Pool, campaign string) (int64, error) {
	recs, err := OutboxRecords(ctx, rdb, campaign)
	if err != nil {
		return 0, err
	}
	return Write(ctx, rdb, pg, recs, -1, nil)
}

// Settler is the reference settler: it consumes flash.claims from the end offsets it
// finds at start and settles the claims of the campaigns it watches.
type Settler struct {
	t      testing.TB
	kcl    *kgo.Client
	rdb    *redis.Client
	pg     *pgxpool.Pool
	Group  string
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	watch   map[string]bool
	written int64
	lastErr error
}

// StartSettler starts a reference settler under a fresh consumer group; it stops when
// the test ends (or on Stop).
func StartSettler(t testing.TB, rdb *redis.Client, pg *pgxpool.Pool, campaigns ...string) *Settler {
	t.Helper()
	s := NewSettler(t, rdb, pg, campaigns...)
	s.Start()
	return s
}

// NewSettler prepares a reference settler: it takes the topic's end offsets now (and
// commits them under its fresh group), and consumes from there once started. Records
// produced in between are settled when it starts.
func NewSettler(t testing.TB, rdb *redis.Client, pg *pgxpool.Pool, campaigns ...string) *Settler {
	t.Helper()
	RequireBroker(t)
	s := &Settler{t: t, rdb: rdb, pg: pg, Group: ID(t, "settletest"), watch: map[string]bool{}, done: make(chan struct{})}
	for _, c := range campaigns {
		s.watch[c] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin, err := kgo.NewClient(kgo.SeedBrokers(Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	_, ends, err := recovery.Offsets(ctx, admin, kafkaopt.ClaimsTopic)
	if err != nil {
		admin.Close()
		t.Fatalf("end offsets: %v", err)
	}
	if err := CommitOffsets(ctx, admin, s.Group, kafkaopt.ClaimsTopic, ends); err != nil {
		admin.Close()
		t.Fatalf("commit start offsets: %v", err)
	}
	admin.Close()
	start := map[int32]kgo.Offset{}
	for p, o := range ends {
		start[p] = kgo.NewOffset().At(o)
	}
	s.kcl, err = kgo.NewClient(kgo.SeedBrokers(Brokers()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{kafkaopt.ClaimsTopic: start}),
		kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Start begins consuming.
func (s *Settler) Start() {
	var rctx context.Context
	rctx, s.cancel = context.WithCancel(context.Background())
	go s.run(rctx)
}

// Watch adds campaigns to settle.
func (s *Settler) Watch(campaigns ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range campaigns {
		s.watch[c] = true
	}
}

// Written is how many new rows the settler wrote.
func (s *Settler) Written() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written
}

// Err is the last error the settler met (it retries).
func (s *Settler) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Stop stops the settler and waits for it.
func (s *Settler) Stop() {
	if s.cancel != nil {
		s.cancel()
		<-s.done
		s.cancel = nil
	}
	if s.kcl != nil {
		s.kcl.Close()
		s.kcl = nil
	}
}

func (s *Settler) run(ctx context.Context) {
	defer close(s.done)
	for {
		fs := s.kcl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		byCamp := map[string][]claim.Record{}
		parts := map[string][]int32{}
		offs := map[string][]int64{}
		commit := map[int32]int64{}
		fs.EachRecord(func(r *kgo.Record) {
			commit[r.Partition] = r.Offset + 1
			// The key is the claim id (kafkaopt.ClaimKey): the record names its campaign.
			rec, err := claim.Decode(r.Value)
			if err != nil {
				return
			}
			s.mu.Lock()
			watched := s.watch[rec.CampaignID]
			s.mu.Unlock()
			if !watched {
				return
			}
			byCamp[rec.CampaignID] = append(byCamp[rec.CampaignID], rec)
			parts[rec.CampaignID] = append(parts[rec.CampaignID], r.Partition)
			offs[rec.CampaignID] = append(offs[rec.CampaignID], r.Offset)
		})
		for camp, recs := range byCamp {
			for {
				// Settle one partition's records at a time so each row names its partition.
				var n int64
				var err error
				for i := range recs {
					var k int64
					k, err = Write(ctx, s.rdb, s.pg, recs[i:i+1], parts[camp][i], offs[camp][i:i+1])
					if err != nil {
						break
					}
					n += k
				}
				s.mu.Lock()
				s.written += n
				s.lastErr = err
				s.mu.Unlock()
				if err == nil || ctx.Err() != nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		if len(commit) > 0 && ctx.Err() == nil {
			if err := CommitOffsets(ctx, s.kcl, s.Group, kafkaopt.ClaimsTopic, commit); err != nil {
				s.mu.Lock()
				s.lastErr = err
				s.mu.Unlock()
			}
		}
	}
}

// CommitOffsets commits offsets for a group that has no live members (a "simple"
// commit, generation -1), as a consumer that assigns its own partitions does.
func CommitOffsets(ctx context.Context, kcl *kgo.Client, group, topic string, offsets map[int32]int64) error {
	ti, err := recovery.Topic(ctx, kcl, topic)
	if err != nil {
		return err
	}
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group = group
	req.Generation = -1
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = topic
	rt.TopicID = ti.ID // v10+ names topics by id
	for p, o := range offsets {
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition = p
		rp.Offset = o
		rp.LeaderEpoch = -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, kcl)
	if err != nil {
		return err
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 {
				return fmt.Errorf("commit %s/%d for %s: error code %d", topic, p.Partition, group, p.ErrorCode)
			}
		}
	}
	return nil
}
