// Package report owns bench's output: result.json (the machine-readable record of a run
// or a ramp), the self-contained HTML report with its plots (latency percentiles and
// throughput over time, outcomes by reason, and for a ramp the latency and throughput
// at each offered rate), and the summaries printed at the end of a command. Charts are
// built with go-echarts; the ECharts runtime is embedded so the page needs no network.
package report

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-echarts/go-echarts/v2/charts"
	"github.com/go-echarts/go-echarts/v2/opts"

	"github.com/flashgate/flashgate/bench/cpu"
	"github.com/flashgate/flashgate/bench/load"
)

// EChartsVersion is the embedded chart runtime's version (assets/README.md).
const EChartsVersion = "5.6.0"

//go:embed assets/echarts.min.js.gz
var echartsGz []byte

var (
	echartsOnce sync.Once
	echartsJS   string
)

// echarts returns the chart runtime. The embedded asset is part of the binary, so a
// broken one is a build defect: it panics at first use.
func echarts() string {
	echartsOnce.Do(func() {
		zr, err := gzip.NewReader(bytes.NewReader(echartsGz))
		if err != nil {
			panic("report: embedded echarts: " + err.Error())
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			panic("report: embedded echarts: " + err.Error())
		}
		echartsJS = string(b)
	})
	return echartsJS
}

// File names inside a run's output folder.
const (
	ResultFile = "result.json"
	HTMLFile   = "report.html"
)

// File is result.json.
type File struct {
	Tool    string           `json:"tool"`
	Mode    string           `json:"mode"` // run or ramp
	Command []string         `json:"command,omitempty"`
	Run     *load.Result     `json:"run,omitempty"`
	Ramp    *load.RampResult `json:"ramp,omitempty"`
	// CPU is where the run's CPU went, by process (bench run --cpu).
	CPU *cpu.Report `json:"cpu,omitempty"`
	// Exit is the exit code the command chose (0 held, 1 objective broke, 2 guarantee
	// violated on the wire).
	Exit int `json:"exit"`
}

// Write writes result.json and report.html into dir.
func Write(dir string, f *File) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	f.Tool = "flashgate-bench"
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("report: encode result: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ResultFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	var buf bytes.Buffer
	if err := HTML(&buf, f); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, HTMLFile), buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// Read reads a result.json (path is the file or its folder).
func Read(path string) (*File, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, ResultFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("report: %s: %w", path, err)
	}
	if f.Run == nil && f.Ramp == nil {
		return nil, fmt.Errorf("report: %s holds neither a run nor a ramp", path)
	}
	return &f, nil
}

// Summary prints a run's figures for a person.
func Summary(w io.Writer, r *load.Result) {
	f := load.FmtInt
	title := "run"
	if r.Label != "" {
		title = r.Label
	}
	fmt.Fprintf(w, "%s → %s, campaign %s, %s/s for %s (burst %s), %d connections, seed %d, mix %s\n",
		title, r.Target, r.Campaign, f(r.Rate), r.Duration, r.Burst, r.Connections, r.Seed, r.Mix)
	fmt.Fprintf(w, "  sent       %s of %s scheduled (%s/s)\n", f(float64(r.Sent)), f(float64(r.Intended)), f(r.SentPerSec))
	fmt.Fprintf(w, "  answered   %s (%s/s)\n", f(float64(r.Answered)), f(r.AnsweredPerSec))
	fmt.Fprintf(w, "  accepted   %s (%s/s), replayed %s\n", f(float64(r.Accepted)), f(r.AcceptedPerSec), f(float64(r.Replayed)))
	if r.Won+r.NoPrize > 0 {
		// A lottery: the accepted claims are its won draws; a no-prize draw is a draw
		// decided and recorded that took nothing.
		fmt.Fprintf(w, "  draws      %s (%s/s): %s won, %s no prize (%s of draws)\n", f(float64(r.Won+r.NoPrize)), f(r.DrawsPerSec),
			f(float64(r.Won)), f(float64(r.NoPrize)), load.FmtPct(float64(r.NoPrize)/float64(r.Won+r.NoPrize)))
	}
	fmt.Fprintf(w, "  rejected   %s%s\n", f(float64(r.Rejected)), byReason(r, "rejected"))
	fmt.Fprintf(w, "  refused    %s invalid requests%s\n", f(float64(r.Refused)), byReason(r, "refused"))
	fmt.Fprintf(w, "  errors     %s%s\n", f(float64(r.Errors)), byReason(r, "error"))
	l := r.Latency
	fmt.Fprintf(w, "  latency    p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (from the intended send time, %s answers)\n",
		load.FmtMs(l.P50), load.FmtMs(l.P90), load.FmtMs(l.P99), load.FmtMs(l.P999), load.FmtMs(l.Max), f(float64(l.Count)))
	sc := r.Schedule
	kept := "kept its schedule"
	if !sc.Kept {
		kept = "DID NOT keep its schedule"
	}
	fmt.Fprintf(w, "  generator  %s: %s; queue wait p99 %s\n", kept, sc.Note, load.FmtMs(sc.QueueWait.P99))
	if r.Violated() {
		fmt.Fprintf(w, "  VIOLATIONS on the wire: %d retries answered differently, %d claim_ids reused, %d malformed requests accepted\n",
			r.ReplayMismatches, r.DuplicateClaimIDs, r.InvalidAccepted)
		for _, v := range r.Violations {
			fmt.Fprintf(w, "    %s\n", v)
		}
	}
	if v := r.Verdict; v != nil {
		if v.Held {
			fmt.Fprintf(w, "  objective  held (%s)\n", v.Objective)
		} else {
			fmt.Fprintf(w, "  objective  BROKE (%s): %s\n", v.Objective, strings.Join(v.Why, "; "))
		}
	}
}

// CPUSummary prints a run's CPU budget: each watched process's CPU, the cores it kept
// busy, and its microseconds per answered request and per accepted claim. Nothing when
// the run had no --cpu.
func CPUSummary(w io.Writer, c *cpu.Report) {
	if c == nil {
		return
	}
	fmt.Fprintf(w, "  cpu        %.1fs window on %d CPUs, %s answered, %s accepted (us = microseconds of CPU)\n",
		c.WindowSeconds, c.CPUs, load.FmtInt(float64(c.Answered)), load.FmtInt(float64(c.Accepted)))
	fmt.Fprintf(w, "    %-10s %8s %7s %12s %14s\n", "process", "cpu s", "cores", "us/answer", "us/accepted")
	row := func(p cpu.Part) {
		fmt.Fprintf(w, "    %-10s %8.2f %7.2f %12.0f %14.0f", p.Name, p.Seconds, p.Cores, p.PerAnswerUs, p.PerAcceptedUs)
		if p.Note != "" {
			fmt.Fprintf(w, "  (%s)", p.Note)
		}
		fmt.Fprintln(w)
	}
	for _, p := range c.Parts {
		row(p)
	}
	row(c.Sum)
	row(c.Unaccounted)
	row(c.Machine)
	fmt.Fprintf(w, "    idle       %.2f cores\n", c.IdleCores)
}

func byReason(r *load.Result, class string) string {
	m := r.ByReason(class)
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + " " + load.FmtInt(float64(m[k]))
	}
	return ": " + strings.Join(parts, ", ")
}

// RampSummary prints a ramp's table of steps and its verdict.
func RampSummary(w io.Writer, r *load.RampResult) {
	fmt.Fprintf(w, "ramp: objective %s, from %s/s by %s, %s per step\n", r.Objective, load.FmtInt(r.Start), r.Step, r.StepDuration)
	fmt.Fprintf(w, "  %10s %10s %10s %9s %9s %9s %9s %8s  %s\n", "offered/s", "answered/s", "accepted/s", "p50", "p99", "p99.9", "max", "errors", "verdict")
	for _, s := range r.Steps {
		res := s.Result
		verdict := "held"
		if !s.Held {
			verdict = "broke: " + strings.Join(s.Why, "; ")
		}
		fmt.Fprintf(w, "  %10s %10s %10s %9s %9s %9s %9s %8d  %s\n", load.FmtInt(s.Rate), load.FmtInt(res.AnsweredPerSec),
			load.FmtInt(res.AcceptedPerSec), load.FmtMs(res.Latency.P50), load.FmtMs(res.Latency.P99),
			load.FmtMs(res.Latency.P999), load.FmtMs(res.Latency.Max), res.Errors, verdict)
	}
	switch {
	case r.HighestHeld == 0:
		fmt.Fprintf(w, "OBJECTIVE BROKE at the first step (%s/s): lower --start\n", load.FmtInt(r.Start))
	default:
		fmt.Fprintf(w, "highest rate that held %s: %s/s", r.Objective, load.FmtInt(r.HighestHeld))
		for _, s := range r.Steps {
			if s.Held && s.Rate == r.HighestHeld {
				fmt.Fprintf(w, " (accepted %s/s, p99 %s)", load.FmtInt(s.Result.AcceptedPerSec), load.FmtMs(s.Result.Latency.P99))
				break
			}
		}
		switch r.Limit {
		case "objective":
			fmt.Fprintf(w, "; broke at %s/s\n", load.FmtInt(r.LowestBroken))
		case "generator":
			fmt.Fprintf(w, "; at %s/s bench itself could not keep the schedule on this machine, so the deployment's limit may be higher\n", load.FmtInt(r.LowestBroken))
		case "max_rate":
			fmt.Fprintf(w, "; --max-rate %s/s reached without breaking\n", load.FmtInt(r.MaxRate))
		default:
			fmt.Fprintf(w, "; %s\n", r.Limit)
		}
	}
}

// HTML writes the self-contained report page.
func HTML(w io.Writer, f *File) error {
	p := page{Title: "flashgate bench", Generated: time.Now().UTC().Format(time.RFC3339), Command: strings.Join(f.Command, " "),
		ECharts: template.JS(echarts()), EChartsVersion: EChartsVersion}
	var timeline []load.Second
	var steps []load.RampStep
	var total *load.Result
	outcomesTitle := "Outcomes by status and reason"
	switch {
	case f.Ramp != nil:
		r := f.Ramp
		p.Mode = "ramp"
		var b strings.Builder
		RampSummary(&b, r)
		p.Summary = b.String()
		p.Held = r.HighestHeld > 0
		p.Verdict = "highest rate that held: " + load.FmtInt(r.HighestHeld) + "/s (" + r.Objective + ")"
		if r.HighestHeld == 0 {
			p.Verdict = "the objective broke at the first step (" + r.Objective + ")"
		}
		steps = r.Steps
		offset := 0
		for _, s := range r.Steps {
			for _, sec := range s.Result.Seconds {
				sec.T += offset
				timeline = append(timeline, sec)
			}
			offset += len(s.Result.Seconds)
		}
		// The outcomes shown are the highest step that held, or the first step when
		// none did (HeldResult does not survive result.json, so look it up by rate).
		for _, s := range r.Steps {
			if s.Held && s.Rate == r.HighestHeld {
				total = s.Result
			}
		}
		if total != nil {
			outcomesTitle += " at " + load.FmtInt(r.HighestHeld) + "/s, the highest step that held"
		} else if len(r.Steps) > 0 {
			total = r.Steps[0].Result
			outcomesTitle += " at " + load.FmtInt(r.Steps[0].Rate) + "/s, the first step"
		}
	case f.Run != nil:
		r := f.Run
		p.Mode = "run"
		var b strings.Builder
		Summary(&b, r)
		CPUSummary(&b, f.CPU)
		p.Summary = b.String()
		timeline, total = r.Seconds, r
		p.Held = !r.Violated() && (r.Verdict == nil || r.Verdict.Held)
		switch {
		case r.Violated():
			p.Verdict = "a guarantee was violated on the wire"
		case r.Verdict != nil && r.Verdict.Held:
			p.Verdict = "objective held: " + r.Verdict.Objective
		case r.Verdict != nil:
			p.Verdict = "objective broke: " + strings.Join(r.Verdict.Why, "; ")
		default:
			p.Verdict = fmt.Sprintf("accepted %s/s, p99 %s", load.FmtInt(r.AcceptedPerSec), load.FmtMs(r.Latency.P99))
		}
	default:
		return fmt.Errorf("report: nothing to report")
	}
	if total != nil {
		p.Target, p.Campaign = total.Target, total.Campaign
	}
	var charts []chartSnippet
	charts = append(charts, latencyChart(timeline), throughputChart(timeline))
	if len(steps) > 0 {
		charts = append(charts, rampLatencyChart(steps), rampThroughputChart(steps))
	}
	if total != nil {
		charts = append(charts, outcomesChart(total, outcomesTitle))
		p.Outcomes = total.Outcomes
	}
	for _, c := range charts {
		p.Charts = append(p.Charts, chartHTML{Element: template.HTML(c.Element), Script: template.HTML(c.Script), Note: c.Note})
	}
	return pageTpl.Execute(w, p)
}

type chartSnippet struct {
	Element, Script, Note string
}

type chartHTML struct {
	Element, Script template.HTML
	Note            string
}

type page struct {
	Title, Mode, Generated, Command, Target, Campaign string
	Summary, Verdict                                  string
	Held                                              bool
	Charts                                            []chartHTML
	Outcomes                                          []load.Outcome
	ECharts                                           template.JS
	EChartsVersion                                    string
}

var chartID atomic.Int64

// nextID names a chart's element uniquely within the process (and so within a page).
func nextID(name string) string {
	return name + strconv.FormatInt(chartID.Add(1), 10)
}

func initOpts(name string) charts.GlobalOpts {
	return charts.WithInitializationOpts(opts.Initialization{Width: "100%", Height: "380px", ChartID: nextID(name)})
}

// still turns animation off: a report is read, printed and screenshotted, and an
// animated chart captured mid-way shows wrong values.
var still = charts.WithAnimation(false)

func secondsAxis(tl []load.Second) []string {
	x := make([]string, len(tl))
	for i, s := range tl {
		x[i] = strconv.Itoa(s.T) + "s"
	}
	return x
}

func latencyChart(tl []load.Second) chartSnippet {
	line := charts.NewLine()
	line.SetGlobalOptions(still, initOpts("latency"),
		charts.WithTitleOpts(opts.Title{Title: "Latency by intended send second (ms, log scale)"}),
		charts.WithTooltipOpts(opts.Tooltip{Show: opts.Bool(true), Trigger: "axis"}),
		charts.WithLegendOpts(opts.Legend{Show: opts.Bool(true), Top: "30px"}),
		charts.WithYAxisOpts(opts.YAxis{Name: "ms", Type: "log"}),
		charts.WithDataZoomOpts(opts.DataZoom{Type: "inside"}),
	)
	line.SetXAxis(secondsAxis(tl))
	for _, q := range []struct {
		name string
		get  func(load.Percentiles) float64
	}{
		{"p50", func(p load.Percentiles) float64 { return p.P50 }},
		{"p90", func(p load.Percentiles) float64 { return p.P90 }},
		{"p99", func(p load.Percentiles) float64 { return p.P99 }},
		{"p99.9", func(p load.Percentiles) float64 { return p.P999 }},
		{"max", func(p load.Percentiles) float64 { return p.Max }},
	} {
		data := make([]opts.LineData, len(tl))
		for i, s := range tl {
			if s.Latency.Count == 0 {
				data[i] = opts.LineData{Value: "-"}
				continue
			}
			data[i] = opts.LineData{Value: round3(q.get(s.Latency))}
		}
		line.AddSeries(q.name, data)
	}
	s := line.RenderSnippet()
	return chartSnippet{Element: s.Element, Script: s.Script,
		Note: "Each point is one second of scheduled requests, measured from when each request was due to be sent, so a stall shows as latency here rather than as missing samples."}
}

func throughputChart(tl []load.Second) chartSnippet {
	line := charts.NewLine()
	line.SetGlobalOptions(still, initOpts("throughput"),
		charts.WithTitleOpts(opts.Title{Title: "Throughput per second"}),
		charts.WithTooltipOpts(opts.Tooltip{Show: opts.Bool(true), Trigger: "axis"}),
		charts.WithLegendOpts(opts.Legend{Show: opts.Bool(true), Top: "30px"}),
		charts.WithYAxisOpts(opts.YAxis{Name: "per second"}),
		charts.WithDataZoomOpts(opts.DataZoom{Type: "inside"}),
	)
	line.SetXAxis(secondsAxis(tl))
	for _, q := range []struct {
		name string
		get  func(load.Second) int64
	}{
		{"sent", func(s load.Second) int64 { return s.Sent }},
		{"answered", func(s load.Second) int64 { return s.Answered }},
		{"accepted", func(s load.Second) int64 { return s.Accepted }},
		{"errors", func(s load.Second) int64 { return s.Errors }},
	} {
		data := make([]opts.LineData, len(tl))
		for i, s := range tl {
			data[i] = opts.LineData{Value: q.get(s)}
		}
		line.AddSeries(q.name, data)
	}
	s := line.RenderSnippet()
	return chartSnippet{Element: s.Element, Script: s.Script,
		Note: "sent and errors are counted by intended send second; answered and accepted by the second the answer arrived."}
}

func rampLatencyChart(steps []load.RampStep) chartSnippet {
	sorted := append([]load.RampStep(nil), steps...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Rate < sorted[j].Rate })
	x := make([]string, len(sorted))
	for i, s := range sorted {
		x[i] = load.FmtInt(s.Rate) + "/s"
	}
	line := charts.NewLine()
	line.SetGlobalOptions(still, initOpts("ramplat"),
		charts.WithTitleOpts(opts.Title{Title: "Latency at each offered rate (ms, log scale)"}),
		charts.WithTooltipOpts(opts.Tooltip{Show: opts.Bool(true), Trigger: "axis"}),
		charts.WithLegendOpts(opts.Legend{Show: opts.Bool(true), Top: "30px"}),
		charts.WithYAxisOpts(opts.YAxis{Name: "ms", Type: "log"}),
	)
	line.SetXAxis(x)
	for _, q := range []struct {
		name string
		get  func(load.Percentiles) float64
	}{
		{"p50", func(p load.Percentiles) float64 { return p.P50 }},
		{"p99", func(p load.Percentiles) float64 { return p.P99 }},
		{"p99.9", func(p load.Percentiles) float64 { return p.P999 }},
		{"max", func(p load.Percentiles) float64 { return p.Max }},
	} {
		data := make([]opts.LineData, len(sorted))
		for i, s := range sorted {
			data[i] = opts.LineData{Value: round3(q.get(s.Result.Latency))}
		}
		line.AddSeries(q.name, data)
	}
	s := line.RenderSnippet()
	return chartSnippet{Element: s.Element, Script: s.Script, Note: "One point per ramp step, sorted by offered rate."}
}

func rampThroughputChart(steps []load.RampStep) chartSnippet {
	sorted := append([]load.RampStep(nil), steps...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Rate < sorted[j].Rate })
	x := make([]string, len(sorted))
	offered := make([]opts.BarData, len(sorted))
	answered := make([]opts.BarData, len(sorted))
	accepted := make([]opts.BarData, len(sorted))
	for i, s := range sorted {
		x[i] = load.FmtInt(s.Rate) + "/s"
		offered[i] = opts.BarData{Value: round3(s.Rate)}
		answered[i] = opts.BarData{Value: round3(s.Result.AnsweredPerSec)}
		accepted[i] = opts.BarData{Value: round3(s.Result.AcceptedPerSec)}
	}
	bar := charts.NewBar()
	bar.SetGlobalOptions(still, initOpts("rampthr"),
		charts.WithTitleOpts(opts.Title{Title: "Offered, answered and accepted per second at each step"}),
		charts.WithTooltipOpts(opts.Tooltip{Show: opts.Bool(true), Trigger: "axis"}),
		charts.WithLegendOpts(opts.Legend{Show: opts.Bool(true), Top: "30px"}),
	)
	bar.SetXAxis(x).AddSeries("offered", offered).AddSeries("answered", answered).AddSeries("accepted", accepted)
	s := bar.RenderSnippet()
	return chartSnippet{Element: s.Element, Script: s.Script}
}

func outcomesChart(r *load.Result, title string) chartSnippet {
	names := make([]string, len(r.Outcomes))
	data := make([]opts.BarData, len(r.Outcomes))
	for i := len(r.Outcomes) - 1; i >= 0; i-- {
		o := r.Outcomes[i]
		j := len(r.Outcomes) - 1 - i
		status := strconv.Itoa(o.Status)
		if o.Status == 0 {
			status = "no answer"
		}
		names[j] = status + " " + o.Reason + " (" + o.Class + ")"
		data[j] = opts.BarData{Value: o.Count}
	}
	bar := charts.NewBar()
	bar.SetGlobalOptions(still, charts.WithInitializationOpts(opts.Initialization{Width: "100%",
		Height: strconv.Itoa(120+28*len(names)) + "px", ChartID: nextID("outcomes")}),
		charts.WithTitleOpts(opts.Title{Title: title}),
		charts.WithTooltipOpts(opts.Tooltip{Show: opts.Bool(true)}),
		charts.WithGridOpts(opts.Grid{Left: "240px"}),
	)
	bar.SetXAxis(names).AddSeries("requests", data).XYReversal()
	s := bar.RenderSnippet()
	return chartSnippet{Element: s.Element, Script: s.Script}
}

func round3(v float64) float64 {
	return float64(int64(v*1000+0.5)) / 1000
}

var pageTpl = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Title}} — {{.Mode}} {{.Campaign}}</title>
<style>
 body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1200px; color: #222; padding: 0 16px; }
 h1 { font-size: 22px; margin-bottom: 4px; }
 .meta { color: #666; font-size: 13px; }
 .verdict { padding: 10px 14px; border-radius: 6px; font-weight: 600; margin: 14px 0; }
 .held { background: #e6f4ea; color: #0d652d; } .broke { background: #fce8e6; color: #a50e0e; }
 pre { background: #f6f8fa; padding: 12px; overflow-x: auto; font-size: 12.5px; border-radius: 6px; }
 .chart { margin: 28px 0 8px; } .note { color: #666; font-size: 13px; margin: 0 0 18px; }
 table { border-collapse: collapse; font-size: 13px; } td, th { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }
 td.n { text-align: right; font-variant-numeric: tabular-nums; }
</style>
<script>{{.ECharts}}</script>
</head>
<body>
<h1>flashgate bench — {{.Mode}}</h1>
<div class="meta">target {{.Target}} · campaign {{.Campaign}} · generated {{.Generated}} · charts: Apache ECharts {{.EChartsVersion}} (embedded)</div>
{{if .Command}}<div class="meta">command: <code>{{.Command}}</code></div>{{end}}
<div class="verdict {{if .Held}}held{{else}}broke{{end}}">{{.Verdict}}</div>
<pre>{{.Summary}}</pre>
{{range .Charts}}<div class="chart">{{.Element}}</div>{{if .Note}}<p class="note">{{.Note}}</p>{{end}}
{{.Script}}
{{end}}
<h2>Outcomes</h2>
<table><tr><th>status</th><th>reason</th><th>class</th><th>requests</th></tr>
{{range .Outcomes}}<tr><td>{{if .Status}}{{.Status}}{{else}}no answer{{end}}</td><td>{{.Reason}}</td><td>{{.Class}}</td><td class="n">{{.Count}}</td></tr>
{{end}}</table>
<p class="note">accepted: 200 (a lottery's won draw: reason won) · no_prize: 200 for a lottery draw that won nothing · replayed: 200 with Idempotent-Replayed (a retry) · rejected: 409/429/403, a business or velocity answer ·
refused: a 4xx to a request bench made malformed on purpose · error: no answer, a timeout, a 5xx, or a 4xx to a valid request (counts against the error budget).</p>
</body>
</html>
`))
