package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/testenv"
)

var (
	drainClaims = flag.Int("drain.claims", 200_000, "BenchmarkDrain: claims in the scratch topic")
	drainRate   = flag.Int("drain.rate", 0, "BenchmarkDrain: 0 = pre-fill the topic, then time the settler draining it; N = produce N claims/s while the settler runs and report the lag")
)

// BenchmarkDrain measures the real settler binary end to end: real claims decided by
// claim.lua (so Redis holds their records, outbox entries and inflight fields), their
// flash.claims records in a scratch topic of its own (FLASH_SETTLER_TOPIC), and the
// settler draining them into Postgres. It reports the sustained rate (claims over the
// span of the settling transactions) and, per claim, the lag from the broker's
// acknowledgement of its record to the transaction that wrote it (settled_at; the offset
// commit follows within one batch). It runs once whatever -benchtime says, and deletes
// its claims from Redis and Postgres at the end.
//
// It also reports CPU per claim from /proc (Linux): the settler process's own
// (settler-cpu-us/claim), its Postgres backends' (pg-cpu-us/claim: the connections
// whose application_name is this run's, found in pg_stat_activity) and the whole
// Postgres server's (pg-all-cpu-us/claim: the postmaster and all its children, WAL
// writer and checkpointer included, but also whatever else uses the shared server
// meanwhile), over the run: from the first produce (with -drain.rate) or the settler's
// start (pre-filled) until every claim is a row.
//
//	go test -run '^$' -bench BenchmarkDrain -benchtime 1x ./settler/ -args -drain.claims=500000
//	go test -run '^$' -bench BenchmarkDrain -benchtime 1x ./settler/ -args -drain.claims=300000 -drain.rate=50000
//
// The settler's settings come from the environment (FLASH_SETTLER_BATCH,
// FLASH_SETTLER_WRITERS, FLASH_SETTLER_FETCH_MIN_BYTES, ...); voucher expiry and
// reconciliation are off unless FLASH_EXPIRE_INTERVAL / FLASH_RECONCILE_INTERVAL say
// otherwise. The relay's MinAge is set to an hour: pre-filled claims
// are older than its default 15 s, and re-publishing them is not what is measured.
func BenchmarkDrain(b *testing.B) {
	rdb, pg := testenv.Redis(b), testenv.PG(b)
	n, rate := *drainClaims, *drainRate
	c := testenv.NewCampaign(b, rdb, pg, n)
	b.Cleanup(func() { c.Forget(b, pg) }) // registered first: it must run even if setup fails
	start := time.Now()
	recs := c.Claim(b, n)
	c.MarkDurable(b, recs)
	b.Logf("%d claims decided by claim.lua in %s", n, time.Since(start).Round(time.Millisecond))
	topic, group := testenv.NewTopic(b), testenv.ID(b, "settler-drain")
	kcl := testenv.Producer(b)

	port := testenv.FreePort(b)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	app := testenv.ID(b, "drain")
	env := settlerEnv(port, topic, group, "FLASH_RELAY_MIN_AGE=1h", "FLASH_PG_URL="+withAppName(testenv.PGURL(), app))
	// Expiry and reconciliation are off unless the environment sets them: their passes
	// cost the same whatever the consume loop does, and a reconciliation pass scans the
	// whole claims table (nothing indexes business_line), which on the shared dev stack
	// would swamp the consume loop's Postgres CPU in a run of a few seconds.
	for _, v := range []string{"FLASH_EXPIRE_INTERVAL", "FLASH_RECONCILE_INTERVAL"} {
		if _, set := os.LookupEnv(v); !set {
			env = append(env, v+"=0")
		}
	}
	bin := testenv.Build(b, "./settler")

	acked := make(map[[2]int64]time.Time, n)
	produce := func(part []claim.Record) {
		krs := testenv.Produce(b, kcl, topic, part)
		now := time.Now()
		for _, kr := range krs {
			acked[[2]int64{int64(kr.Partition), kr.Offset}] = now
		}
	}
	b.ResetTimer()
	var p *testenv.Proc
	var cpu0 cpuSample
	if rate == 0 {
		start = time.Now()
		for i := 0; i < n; i += 20_000 {
			produce(recs[i:min(i+20_000, n)])
		}
		b.Logf("%d records produced to %s in %s", n, topic, time.Since(start).Round(time.Millisecond))
		p = testenv.Start(b, bin, env)
		cpu0 = sampleCPU(b, pg, p.Pid(), app)
	} else {
		p = testenv.Start(b, bin, env)
		p.WaitReady(b, base+"/readyz")
		cpu0 = sampleCPU(b, pg, p.Pid(), app)
		// Produce in ticks of 10 ms, each waited for (ProduceSync), like a gateway at
		// rate claims/s; a tick that falls behind is caught up by the next.
		start = time.Now()
		tick := max(1, rate/100)
		for i := 0; i < n; i += tick {
			due := start.Add(time.Duration(float64(i) / float64(rate) * float64(time.Second)))
			time.Sleep(time.Until(due))
			produce(recs[i:min(i+tick, n)])
		}
		offered := time.Since(start)
		b.Logf("%d records produced at %.0f/s (offered %d/s)", n, float64(n)/offered.Seconds(), rate)
	}
	// Watch the settler's own counter until it has read everything, then Postgres
	// (polling Postgres all along would take from the Postgres being measured). On the
	// shared dev stack other settlers' outbox relays may re-publish claims of this
	// benchmark older than their MinAge to their own topics and write some of them
	// first; the settler then counts those as duplicates, so rows are what is awaited.
	if rate == 0 {
		p.WaitReady(b, base+"/readyz")
	}
	deadline := time.Now().Add(time.Duration(n/1000+120) * time.Second)
	for metric(b, base, "flashgate_settler_records_consumed_total") < float64(n) || c.CountClaims(b, pg) < int64(n) {
		if time.Now().After(deadline) || p.Exited() {
			b.Fatalf("settler did not settle %d claims in time (%d rows)", n, c.CountClaims(b, pg))
		}
		time.Sleep(250 * time.Millisecond)
	}
	cpu := sampleCPU(b, pg, p.Pid(), app).since(cpu0)
	b.Logf("settler: %s", settlerStats(b, base))
	wall := time.Since(start)
	b.StopTimer()
	if err := p.Stop(); err != nil {
		b.Errorf("settler exit: %v", err)
	}
	books := c.ReadBooks(b, pg)
	if books.Claims != int64(n) || books.Reserves != int64(n) || books.DistinctRequests != int64(n) {
		b.Fatalf("books %+v; want %d claims, requests and reserves", books, n)
	}

	// The rate over the settling transactions' span, and the lag of each claim.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := pg.Query(ctx, `SELECT kafka_partition, kafka_offset, settled_at FROM claims WHERE campaign_id = $1`, c.ID)
	if err != nil {
		b.Fatal(err)
	}
	var first, last time.Time
	lags := make([]time.Duration, 0, n)
	for rows.Next() {
		var part int32
		var off int64
		var at time.Time
		if err := rows.Scan(&part, &off, &at); err != nil {
			b.Fatal(err)
		}
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
		if ack, ok := acked[[2]int64{int64(part), off}]; ok {
			lags = append(lags, max(0, at.Sub(ack)))
		}
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	slices.Sort(lags)
	q := func(f float64) time.Duration {
		return lags[min(len(lags)-1, int(f*float64(len(lags))))].Round(time.Millisecond)
	}
	span := last.Sub(first)
	b.ReportMetric(float64(n)/span.Seconds(), "claims/s")
	b.ReportMetric(float64(q(0.5).Milliseconds()), "p50-lag-ms")
	b.ReportMetric(float64(q(0.99).Milliseconds()), "p99-lag-ms")
	perClaim := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	b.ReportMetric(perClaim(cpu.settler), "settler-cpu-us/claim")
	b.ReportMetric(perClaim(cpu.backends), "pg-cpu-us/claim")
	b.ReportMetric(perClaim(cpu.server), "pg-all-cpu-us/claim")
	b.Logf("CPU per 10k claims (FLASH_SETTLER_FETCH_MIN_BYTES=%q): settler %.2f s, its Postgres backends %.2f s, the whole Postgres server %.2f s",
		os.Getenv("FLASH_SETTLER_FETCH_MIN_BYTES"), perClaim(cpu.settler)/100, perClaim(cpu.backends)/100, perClaim(cpu.server)/100)
	b.Logf("%s", fmt.Sprintf("settled %d claims: %.0f claims/s over the transactions' span (%s), %.0f/s wall clock from the first produce (%s); lag p50 %s p99 %s max %s",
		n, float64(n)/span.Seconds(), span.Round(time.Millisecond), float64(n)/wall.Seconds(), wall.Round(time.Millisecond), q(0.5), q(0.99), lags[len(lags)-1].Round(time.Millisecond)))
}

// metric reads one unlabelled counter or gauge from the settler's /metrics (0 if absent).
func metric(b *testing.B, base, name string) float64 {
	b.Helper()
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(base + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			return f
		}
	}
	return 0
}

// settlerStats summarises the settler's own figures: polls, their mean size and time.
func settlerStats(b *testing.B, base string) string {
	polls := metric(b, base, "flashgate_settler_batch_seconds_count")
	return fmt.Sprintf("%.0f polls, %.0f records and %.0f ms each on average; %.0f written, %.0f duplicates, %.0f retries",
		polls, metric(b, base, "flashgate_settler_batch_records_sum")/max(polls, 1),
		1000*metric(b, base, "flashgate_settler_batch_seconds_sum")/max(polls, 1),
		metric(b, base, "flashgate_settler_claims_written_total"), metric(b, base, "flashgate_settler_duplicates_ignored_total"),
		metric(b, base, "flashgate_settler_batch_retries_total"))
}

// withAppName adds application_name to a Postgres URL, so the settler's backends can be
// told apart in pg_stat_activity.
func withAppName(pgURL, app string) string {
	sep := "?"
	if strings.Contains(pgURL, "?") {
		sep = "&"
	}
	return pgURL + sep + "application_name=" + app
}

// cpuSample is the CPU time used so far by the settler process, by each of its Postgres
// backends (by pid), and by the whole Postgres server (the postmaster with its reaped
// children, plus its live children).
type cpuSample struct {
	settler  time.Duration
	backends map[int]time.Duration
	server   time.Duration
}

// cpuDelta is what was used between two samples.
type cpuDelta struct{ settler, backends, server time.Duration }

// since is the CPU used from s0 to s. A backend that started after s0 counts from 0; one
// gone by s (the pool closed it) is not counted: its time is in server only.
func (s cpuSample) since(s0 cpuSample) cpuDelta {
	d := cpuDelta{settler: s.settler - s0.settler, server: s.server - s0.server}
	for pid, t := range s.backends {
		d.backends += t - s0.backends[pid]
	}
	return d
}

func sampleCPU(b *testing.B, pg *pgxpool.Pool, settlerPid int, app string) cpuSample {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := cpuSample{backends: map[int]time.Duration{}}
	st, err := procStat(settlerPid)
	if err != nil {
		b.Fatal(err)
	}
	s.settler = st.cpu
	rows, err := pg.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1`, app)
	if err != nil {
		b.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		b.Fatal(err)
	}
	for _, pid := range pids {
		if st, err := procStat(int(pid)); err == nil { // a backend may just have exited
			s.backends[int(pid)] = st.cpu
		}
	}
	var own int32
	if err := pg.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&own); err != nil {
		b.Fatal(err)
	}
	me, err := procStat(int(own))
	if err != nil {
		b.Fatalf("Postgres backend %d not readable in /proc (is Postgres on this machine?): %v", own, err)
	}
	pm, err := procStat(me.ppid)
	if err != nil {
		b.Fatal(err)
	}
	s.server = pm.cpu + pm.children
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := procStat(pid); err == nil && st.ppid == me.ppid {
			s.server += st.cpu
		}
	}
	return s
}

type stat struct {
	ppid          int
	cpu, children time.Duration // utime+stime; cutime+cstime of reaped children
}

// procStat reads /proc/<pid>/stat. Its times are in USER_HZ ticks, 100 a second on
// every Linux.
func procStat(pid int) (stat, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	// The command name (field 2) may hold spaces; what follows its ')' starts at
	// field 3 (state): ppid is field 4, utime..cstime fields 14..17.
	rest := string(raw[bytes.LastIndexByte(raw, ')')+1:])
	f := strings.Fields(rest)
	if len(f) < 15 {
		return stat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	num := func(i int) int64 { v, _ := strconv.ParseInt(f[i-3], 10, 64); return v }
	tick := func(v int64) time.Duration { return time.Duration(v) * 10 * time.Millisecond }
	return stat{ppid: int(num(4)), cpu: tick(num(14) + num(15)), children: tick(num(16) + num(17))}, nil
}
