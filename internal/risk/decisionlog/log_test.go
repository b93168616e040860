package decisionlog_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashgate/flashgate/gateway/claimer/claimertest"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/risk/decisionlog"
	"github.com/flashgate/flashgate/internal/testenv"
)

func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// With no broker to talk to, Record never blocks and every decision ends up counted as
// dropped - and claims made through a claimer logging to it are unaffected.
func TestDeadBrokerDropsAndCounts(t *testing.T) {
	dead := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) // nothing listens there
	reg := prometheus.NewRegistry()
	dl, err := decisionlog.New(decisionlog.Config{Brokers: []string{dead}, MaxBuffered: 5,
		DeliveryTimeout: time.Second}, decisionlog.NewMetrics(reg), testenv.Quiet)
	if err != nil {
		t.Fatal(err)
	}
	d := risk.Decision{TimeMs: 1, CampaignID: "c", Code: claim.CodeAccepted, Seen: risk.NotEvaluated}
	for range 1000 {
		dl.Record(&d) // beyond 5 buffered: dropped at once, not waited for
	}
	e := testenv.New(t)
	camp := e.StockCampaign(10, 1)
	c := claimertest.New(e, dl)
	for i := range 3 {
		if o := claimertest.Claim(t, c, camp, "u"+strconv.Itoa(i), "d", "10.0.0.1"); o.Code != claim.CodeAccepted {
			t.Fatalf("claim %d with a dead decision log: %s", i, risk.ReasonOf(o.Code))
		}
	}
	testenv.Eventually(t, 20*time.Second, "every decision counted as dropped", func() bool {
		return metric(t, reg, "flashgate_gateway_decisions_dropped_total") == 1003
	})
	if p := metric(t, reg, "flashgate_gateway_decisions_produced_total"); p != 0 {
		t.Errorf("produced %v with no broker", p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	dl.Close(ctx)
}

// Config errors name the field.
func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  decisionlog.Config
		want string
	}{
		{decisionlog.Config{}, "Brokers"},
		{decisionlog.Config{Brokers: []string{"x:1"}, Linger: 2 * time.Second}, "Linger"},
		{decisionlog.Config{Brokers: []string{"x:1"}, MaxBuffered: -1}, "MaxBuffered"},
		{decisionlog.Config{Brokers: []string{"x:1"}, DeliveryTimeout: time.Millisecond}, "DeliveryTimeout"},
	} {
		if _, err := decisionlog.New(c.cfg, nil, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
}
