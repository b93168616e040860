package settle_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/settler/settle"
)

// Two settlers in one consumer group share one hot campaign (issue 15): its records are
// keyed by claim id, so they spread over every partition, each settler settles the
// partitions it was given, and together they write every claim exactly once.
func TestTwoSettlersInOneGroupShareAHotCampaign(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	const n = 400
	c, recs := testenv.DurableCampaign(t, rdb, pg, n)
	topic, group := testenv.NewTopic(t), testenv.ID(t, "settler-group")
	a := startSettler(t, deps{rdb: rdb, pg: pg, topic: topic, group: group, cfg: settle.Config{MaxBatch: 32}})
	b := startSettler(t, deps{rdb: rdb, pg: pg, topic: topic, group: group, cfg: settle.Config{MaxBatch: 32}})
	waitMembers(t, group, 2)

	testenv.Produce(t, testenv.Producer(t), topic, recs)
	checkBooks(t, c, waitRows(t, c, pg, n), n)
	wa, wb := a.metric("flashgate_settler_claims_written_total"), b.metric("flashgate_settler_claims_written_total")
	if wa+wb != n || wa == 0 || wb == 0 {
		t.Fatalf("claims written: %v and %v; want %d between them, each a share", wa, wb, n)
	}
	t.Logf("the two settlers wrote %v and %v of %d", wa, wb, n)
}

// waitMembers waits until group has members with every partition of its topic assigned
// among them.
func waitMembers(t *testing.T, group string, members int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(testenv.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	testenv.Eventually(t, 30*time.Second, "both settlers to join the group", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		gs, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			return false
		}
		g, ok := gs[group]
		if !ok || g.State != "Stable" || len(g.Members) != members {
			return false
		}
		for _, m := range g.Members {
			if a, ok := m.Assigned.AsConsumer(); !ok || len(a.Topics) == 0 || len(a.Topics[0].Partitions) == 0 {
				return false
			}
		}
		return true
	})
}
