package recovery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// CatchUp waits until every claim that reached Kafka before the call is a row in
// Postgres (or was skipped by the settler). A rebuild reads its counters from Postgres
// plus the Redis outbox; a claim that is in Kafka but in neither would be forgotten, and
// its stock sold twice.
type CatchUp interface {
	Wait(ctx context.Context) error
}

// KafkaCatchUp waits for the settler's consumer group: it takes the end offsets of the
// claims topic when called and polls the group's committed offsets until each partition
// has reached them. The settler commits only after Postgres commits (DESIGN.md), so a
// committed offset is a settled one.
type KafkaCatchUp struct {
	Client *kgo.Client // any client of the cluster; used for admin requests only
	Group  string      // the settler's group (kafkaopt.SettlerGroup)
	Topic  string      // kafkaopt.ClaimsTopic
	Poll   time.Duration
}

// Wait implements CatchUp.
func (k *KafkaCatchUp) Wait(ctx context.Context) error {
	if k.Client == nil || k.Group == "" || k.Topic == "" {
		return errors.New("kafka catch-up: Client, Group and Topic are required")
	}
	poll := k.Poll
	if poll <= 0 {
		poll = 100 * time.Millisecond
	}
	starts, ends, err := Offsets(ctx, k.Client, k.Topic)
	if err != nil {
		return fmt.Errorf("kafka catch-up: %w", err)
	}
	var behind string
	for {
		committed, err := Committed(ctx, k.Client, k.Group, k.Topic)
		if err == nil {
			behind = ""
			for p, end := range ends {
				c, ok := committed[p]
				if (ok && c >= end) || (!ok && end <= starts[p]) {
					continue
				}
				behind = fmt.Sprintf("partition %d committed %d (set: %v), end %d", p, c, ok, end)
				break
			}
			if behind == "" {
				return nil
			}
		} else {
			behind = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka catch-up: group %s has not caught up with %s (%s): %w", k.Group, k.Topic, behind, ctx.Err())
		case <-time.After(poll):
		}
	}
}

// TopicInfo is what the metadata says about a topic.
type TopicInfo struct {
	ID         [16]byte
	Partitions []int32
}

// Topic reads a topic's id and partitions.
func Topic(ctx context.Context, kcl *kgo.Client, topic string) (TopicInfo, error) {
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	meta.Topics = append(meta.Topics, mt)
	mresp, err := meta.RequestWith(ctx, kcl)
	if err != nil {
		return TopicInfo{}, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	if len(mresp.Topics) != 1 || mresp.Topics[0].ErrorCode != 0 || len(mresp.Topics[0].Partitions) == 0 {
		return TopicInfo{}, fmt.Errorf("metadata of %s: topic not found", topic)
	}
	ti := TopicInfo{ID: mresp.Topics[0].TopicID}
	for _, p := range mresp.Topics[0].Partitions {
		ti.Partitions = append(ti.Partitions, p.Partition)
	}
	return ti, nil
}

// Offsets returns the first and the next offset of each partition of a topic.
func Offsets(ctx context.Context, kcl *kgo.Client, topic string) (starts, ends map[int32]int64, err error) {
	ti, err := Topic(ctx, kcl, topic)
	if err != nil {
		return nil, nil, err
	}
	list := func(ts int64) (map[int32]int64, error) {
		req := kmsg.NewPtrListOffsetsRequest()
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = topic
		for _, p := range ti.Partitions {
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Partition = p
			rp.Timestamp = ts
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, kcl)
		if err != nil {
			return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
		}
		out := make(map[int32]int64, len(rt.Partitions))
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 {
					return nil, fmt.Errorf("list offsets of %s/%d: error code %d", topic, p.Partition, p.ErrorCode)
				}
				out[p.Partition] = p.Offset
			}
		}
		return out, nil
	}
	if starts, err = list(-2); err != nil {
		return nil, nil, err
	}
	if ends, err = list(-1); err != nil {
		return nil, nil, err
	}
	return starts, ends, nil
}

// Committed returns a group's committed offsets in a topic; partitions without a commit
// are absent.
func Committed(ctx context.Context, kcl *kgo.Client, group, topic string) (map[int32]int64, error) {
	ti, err := Topic(ctx, kcl, topic)
	if err != nil {
		return nil, err
	}
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = group
	rt := kmsg.NewOffsetFetchRequestTopic()
	rt.Topic = topic
	rt.Partitions = ti.Partitions
	req.Topics = append(req.Topics, rt)
	// The client fills in the topic id for brokers that want it (v10+) and the name in
	// the answer.
	resp, err := req.RequestWith(ctx, kcl)
	if err != nil {
		return nil, fmt.Errorf("offsets of group %s: %w", group, err)
	}
	if resp.ErrorCode != 0 {
		return nil, fmt.Errorf("offsets of group %s: error code %d", group, resp.ErrorCode)
	}
	out := map[int32]int64{}
	for _, t := range resp.Topics {
		if t.Topic != topic {
			continue
		}
		for _, p := range t.Partitions {
			if p.ErrorCode == 0 && p.Offset >= 0 {
				out[p.Partition] = p.Offset
			}
		}
	}
	for _, g := range resp.Groups {
		for _, t := range g.Topics {
			if t.Topic != topic && t.TopicID != ti.ID {
				continue
			}
			for _, p := range t.Partitions {
				if p.ErrorCode == 0 && p.Offset >= 0 {
					out[p.Partition] = p.Offset
				}
			}
		}
	}
	return out, nil
}
