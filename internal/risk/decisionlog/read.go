package decisionlog

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/risk"
)

// Entry is one decision read back with where it was in the topic.
type Entry struct {
	risk.Decision
	Partition int32
	Offset    int64
}

// ReadStats says what a read saw besides the decisions it returned.
type ReadStats struct {
	Records  int // records read from the topic in the time range
	Bad      int // records that did not decode (reported, skipped)
	FirstErr error
}

// slack covers the difference between the producer's clock (the record timestamp the
// broker indexes) and the Redis clock (the decision's time): records are looked up from
// since-slack and then filtered on the decision's own time.
const slack = 30 * time.Second

// Read returns every decision made at or after sinceMs (Redis clock) that was on the
// topic when Read started, in decision order: by time, then by partition and offset
// (one campaign's decisions are on one partition, in the order they were produced).
// With a campaign, only that campaign's partition is read and only its decisions are
// returned.
func Read(ctx context.Context, brokers []string, topic string, sinceMs int64, campaign string) ([]Entry, ReadStats, error) {
	if topic == "" {
		topic = kafkaopt.DecisionsTopic
	}
	var st ReadStats
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DialTimeout(2*time.Second),
		kgo.RequestRetries(2), kgo.RetryTimeout(5*time.Second))
	if err != nil {
		return nil, st, fmt.Errorf("decision log: client: %w", err)
	}
	defer cl.Close()

	starts, ends, err := offsets(ctx, cl, topic, sinceMs-slack.Milliseconds())
	if err != nil {
		return nil, st, err
	}
	only := int32(-1)
	if campaign != "" {
		// The producer's partitioner (franz-go's default, Kafka's murmur2 of the key)
		// puts a campaign's decisions on one partition.
		only = int32(kgo.StickyKeyPartitioner(nil).ForTopic(topic).Partition(&kgo.Record{Key: []byte(campaign)}, len(ends)))
	}
	want := make(map[int32]kgo.Offset)
	for p, s := range starts {
		if s < ends[p] && (only < 0 || p == only) {
			want[p] = kgo.NewOffset().At(s)
		}
	}
	if len(want) == 0 {
		return nil, st, nil
	}
	cons, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DialTimeout(2*time.Second),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: want}),
		kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return nil, st, fmt.Errorf("decision log: consumer: %w", err)
	}
	defer cons.Close()

	var out []Entry
	remaining := len(want)
	done := make(map[int32]bool, len(want))
	for remaining > 0 {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, st, fmt.Errorf("decision log: reading %s: %d partitions not read to the end: %w", topic, remaining, err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && ferr == nil {
				ferr = fmt.Errorf("decision log: fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return nil, st, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			if done[r.Partition] || r.Offset >= ends[r.Partition] {
				return
			}
			if r.Offset == ends[r.Partition]-1 {
				done[r.Partition] = true
				remaining--
			}
			st.Records++
			d, err := risk.DecodeDecision(r.Value)
			if err != nil {
				st.Bad++
				if st.FirstErr == nil {
					st.FirstErr = fmt.Errorf("partition %d offset %d: %w", r.Partition, r.Offset, err)
				}
				return
			}
			if d.TimeMs < sinceMs || (campaign != "" && d.CampaignID != campaign) {
				return
			}
			out = append(out, Entry{Decision: d, Partition: r.Partition, Offset: r.Offset})
		})
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := &out[i], &out[j]
		if a.TimeMs != b.TimeMs {
			return a.TimeMs < b.TimeMs
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Offset < b.Offset
	})
	return out, st, nil
}

// offsets returns, per partition of topic, the first offset whose timestamp is at or
// after sinceMs and the end offset (the next offset to be written).
func offsets(ctx context.Context, cl *kgo.Client, topic string, sinceMs int64) (starts, ends map[int32]int64, err error) {
	mreq := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	mreq.Topics = append(mreq.Topics, mt)
	mresp, err := mreq.RequestWith(ctx, cl)
	if err != nil {
		return nil, nil, fmt.Errorf("decision log: metadata of %s: %w", topic, err)
	}
	if len(mresp.Topics) != 1 {
		return nil, nil, fmt.Errorf("decision log: metadata of %s: %d topics in answer", topic, len(mresp.Topics))
	}
	if err := kerr.ErrorForCode(mresp.Topics[0].ErrorCode); err != nil {
		return nil, nil, fmt.Errorf("decision log: topic %s: %w", topic, err)
	}
	var parts []int32
	for _, p := range mresp.Topics[0].Partitions {
		parts = append(parts, p.Partition)
	}
	list := func(ts int64) (map[int32]int64, error) {
		req := kmsg.NewPtrListOffsetsRequest()
		req.ReplicaID = -1
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = topic
		for _, p := range parts {
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Partition = p
			rp.Timestamp = ts
			rp.CurrentLeaderEpoch = -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return nil, fmt.Errorf("decision log: list offsets of %s: %w", topic, err)
		}
		out := make(map[int32]int64, len(parts))
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					return nil, fmt.Errorf("decision log: list offsets of %s/%d: %w", topic, p.Partition, err)
				}
				out[p.Partition] = p.Offset
			}
		}
		return out, nil
	}
	if ends, err = list(-1); err != nil {
		return nil, nil, err
	}
	if starts, err = list(sinceMs); err != nil {
		return nil, nil, err
	}
	for p, s := range starts {
		if s < 0 { // no record at or after the time: nothing to read there
			starts[p] = ends[p]
		}
	}
	return starts, ends, nil
}
