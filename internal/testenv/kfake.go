package testenv

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flashgate/flashgate/internal/kafkaopt"
)

// Kfake is an in-process Kafka-protocol cluster of the test's own (franz-go's kfake),
// for broker faults the shared dev broker cannot be given: its control hooks
// (ControlKey, KeepControl, SleepControl) decide how a request of one kind is answered.
// The helpers below are the faults the tests use; a test may add its own hooks.
type Kfake struct {
	*kfake.Cluster
}

// NewKfake starts a one-broker cluster with flash.claims, flash.decisions and
// flash.claims.rejected (4 partitions each) and auto-created topics, closed when the
// test ends. opts are added to (and may override) these.
func NewKfake(t testing.TB, opts ...kfake.Opt) *Kfake {
	t.Helper()
	base := []kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(),
		kfake.SeedTopics(4, kafkaopt.ClaimsTopic, kafkaopt.DecisionsTopic, kafkaopt.ClaimsRejectedTopic)}
	c, err := kfake.NewCluster(append(base, opts...)...)
	if err != nil {
		t.Fatalf("kfake cluster: %v", err)
	}
	t.Cleanup(c.Close)
	return &Kfake{Cluster: c}
}

// Brokers are the cluster's listen addresses, for kgo.SeedBrokers or -kafka-brokers.
func (k *Kfake) Brokers() []string { return k.ListenAddrs() }

// Fault is a fault a Kfake helper armed; it bites from when it is armed until Clear.
type Fault struct {
	on  atomic.Bool
	hit atomic.Int64
}

// Clear stops the fault: requests are handled as usual again.
func (f *Fault) Clear() { f.on.Store(false) }

// Hits is how many requests the fault answered.
func (f *Fault) Hits() int64 { return f.hit.Load() }

// control arms fn for every request of key while f is on; fn answers the request.
func (k *Kfake) control(key kmsg.Key, answer func(kmsg.Request) (kmsg.Response, error)) *Fault {
	f := &Fault{}
	f.on.Store(true)
	k.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.KeepControl()
		if !f.on.Load() {
			return nil, nil, false
		}
		f.hit.Add(1)
		resp, err := answer(req)
		return resp, err, true
	})
	return f
}

// FailProduce answers every Produce request with the error code (a kerr code, e.g.
// kerr.InvalidRecord.Code) on every partition, storing nothing.
func (k *Kfake) FailProduce(code int16) *Fault {
	return k.control(kmsg.Produce, func(kreq kmsg.Request) (kmsg.Response, error) {
		req := kreq.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil
	})
}

// DropConnections closes the client's connection on every request of key (kmsg.Fetch,
// kmsg.Produce, ...): the broker goes away for that kind of request only.
func (k *Kfake) DropConnections(key kmsg.Key) *Fault {
	return k.control(key, func(kmsg.Request) (kmsg.Response, error) {
		return nil, errors.New("testenv: connection dropped by the test")
	})
}
