package report

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/flashgate/flashgate/bench/load"
)

func sample() *load.Result {
	r := &load.Result{Target: "http://127.0.0.1:8080", Campaign: "cny-2027", Rate: 1000, Duration: "2s", Burst: "none",
		Intended: 2000, Sent: 2000, Answered: 2000, Accepted: 300, Rejected: 1690, Refused: 10,
		Latency: load.Percentiles{Count: 2000, P50: 1.2, P90: 2, P99: 4.5, P999: 9, Max: 12},
		Outcomes: []load.Outcome{{Status: 200, Reason: "accepted", Class: "accepted", Count: 300},
			{Status: 409, Reason: "sold_out", Class: "rejected", Count: 1690}, {Status: 400, Reason: "invalid_request", Class: "refused", Count: 10}},
		Schedule: load.Schedule{Kept: true, Note: "lag p99 0.1ms"}}
	for i := 0; i < 2; i++ {
		r.Seconds = append(r.Seconds, load.Second{T: i, Sent: 1000, Answered: 1000, Accepted: 150,
			Latency: load.Percentiles{Count: 1000, P50: 1, P90: 2, P99: 4, P999: 8, Max: 12}})
	}
	return r
}

// The page is self-contained: the chart runtime is inline, nothing is loaded from
// elsewhere, and each chart is initialised.
func TestHTMLIsSelfContained(t *testing.T) {
	var buf bytes.Buffer
	run := sample()
	if err := HTML(&buf, &File{Mode: "run", Run: run}); err != nil {
		t.Fatal(err)
	}
	html := buf.String()
	if regexp.MustCompile(`<script[^>]+src=`).MatchString(html) || strings.Contains(html, "<link") {
		t.Fatal("the report loads a script or stylesheet from elsewhere")
	}
	if !strings.Contains(html, "Apache Software Foundation") && !strings.Contains(html, "echarts") {
		t.Fatal("no embedded echarts runtime")
	}
	if n := strings.Count(html, "echarts.init("); n != 3 {
		t.Errorf("%d charts initialised, want 3 (latency, throughput, outcomes)", n)
	}
	if len(html) < 900_000 {
		t.Errorf("report is %d bytes: the runtime (about 1 MB) is not inline", len(html))
	}
	ramp := &load.RampResult{Objective: "p99≤10ms", Start: 1000, Step: "x2", StepDuration: "2s", HighestHeld: 1000, LowestBroken: 2000, Limit: "objective",
		Steps: []load.RampStep{{Rate: 1000, Held: true, Result: sample()}, {Rate: 2000, Held: false, Why: []string{"p99 20ms > 10ms"}, Result: sample()}}}
	buf.Reset()
	if err := HTML(&buf, &File{Mode: "ramp", Ramp: ramp}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "echarts.init("); n != 5 {
		t.Errorf("ramp: %d charts, want 5", n)
	}
	var s bytes.Buffer
	RampSummary(&s, ramp)
	if !strings.Contains(s.String(), "highest rate that held p99≤10ms: 1,000/s") {
		t.Errorf("ramp summary:\n%s", s.String())
	}
}

func TestWriteRead(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, &File{Mode: "run", Run: sample(), Command: []string{"bench", "run"}, Exit: 0}); err != nil {
		t.Fatal(err)
	}
	f, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if f.Run.Accepted != 300 || f.Tool != "flashgate-bench" || len(f.Run.Seconds) != 2 {
		t.Fatalf("round trip: %+v", f.Run)
	}
	if _, err := os.Stat(filepath.Join(dir, HTMLFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ResultFile), []byte(`{"mode":"run"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dir); err == nil {
		t.Fatal("read a result with neither run nor ramp")
	}
}
