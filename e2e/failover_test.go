package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/flagenv"
	"github.com/flashgate/flashgate/internal/testenv"
)

// sentinelSet is a Redis primary, one replica and three Sentinels (quorum 2) of a
// test's own on loopback, as `make up REDIS=sentinel` runs them (scripts/stack.sh),
// with a down-after of 1 s.
type sentinelSet struct {
	t                *testing.T
	primary, replica *testenv.Proc
	pport, rport     int
	sentinels        []string
	master           string
}

func startSentinelSet(t *testing.T) *sentinelSet {
	t.Helper()
	ss := &sentinelSet{t: t, pport: testenv.FreePort(t), rport: testenv.FreePort(t), master: "flashgate"}
	node := func(name string, port int, extra ...string) *testenv.Proc {
		args := append([]string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", tempDir(t, name),
			"--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "yes"}, extra...)
		return testenv.Start(t, "redis-server", nil, args...)
	}
	ss.primary = node("primary", ss.pport)
	waitPing(t, "127.0.0.1:"+strconv.Itoa(ss.pport))
	ss.replica = node("replica", ss.rport, "--replicaof", "127.0.0.1", strconv.Itoa(ss.pport))
	waitPing(t, "127.0.0.1:"+strconv.Itoa(ss.rport))
	for i := 0; i < 3; i++ {
		port := testenv.FreePort(t)
		dir := tempDir(t, "sentinel-"+strconv.Itoa(i))
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("bind 127.0.0.1\nport %d\ndir %s\nsentinel monitor %s 127.0.0.1 %d 2\n"+
			"sentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n",
			port, dir, ss.master, ss.pport, ss.master, ss.master, ss.master)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		testenv.Start(t, "redis-sentinel", nil, conf)
		ss.sentinels = append(ss.sentinels, "127.0.0.1:"+strconv.Itoa(port))
	}
	// A failover needs the Sentinels to know each other and the replica.
	for _, a := range ss.sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: a, DialTimeout: time.Second})
		testenv.Eventually(t, 30*time.Second, "sentinel "+a+" sees the replica and the other two sentinels", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			m, err := sc.Master(ctx, ss.master).Result()
			return err == nil && m["num-other-sentinels"] == "2" && m["num-slaves"] == "1"
		})
		sc.Close()
	}
	return ss
}

func waitPing(t *testing.T, addr string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second})
	defer rdb.Close()
	testenv.Eventually(t, 30*time.Second, "redis "+addr+" answers", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return rdb.Ping(ctx).Err() == nil
	})
}

// custom points startFaults' binaries at the set through its Sentinels, and gives the
// test a failover client built the way the binaries build theirs (internal/flagenv).
func (ss *sentinelSet) custom() *customRedis {
	auth := flagenv.RedisAuth{Sentinels: ss.sentinels, Master: ss.master}
	rdb := auth.NewClient(&redis.Options{DialTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second,
		WriteTimeout: 5 * time.Second, PoolSize: 16})
	ss.t.Cleanup(func() { rdb.Close() })
	return &customRedis{rdb: rdb, envs: []string{
		"FLASH_REDIS_SENTINELS=" + strings.Join(ss.sentinels, ","), "FLASH_REDIS_MASTER=" + ss.master,
		"FLASH_REDIS_ADDR=127.0.0.1:1", // never used with Sentinels: a wrong address proves it
	}}
}

// attempt is one claim request of a timed sale: when it was answered and how.
type attempt struct {
	at     time.Time
	took   time.Duration
	status int
	why    string // the 503's reason or error
}

// timedSale is sale() that also records every attempt (503s included) with its time.
func (s *system) timedSale(campaign, skuID string, us []string, conc int) (wait func() []claimResp, log func() []attempt, answered func() int) {
	var mu sync.Mutex
	var atts []attempt
	var done int
	out := make([]claimResp, len(us))
	var wg sync.WaitGroup
	sem := make(chan struct{}, conc)
	wg.Go(func() {
		var inner sync.WaitGroup
		for i, u := range us {
			sem <- struct{}{}
			inner.Go(func() {
				defer func() { <-sem }()
				r := claimReq{CampaignID: campaign, SKU: skuID, UserID: u, DeviceID: "dev-" + u, RequestID: "req-" + u}
				deadline := time.Now().Add(60 * time.Second)
				for {
					sent := time.Now()
					a := s.claim(r)
					mu.Lock()
					atts = append(atts, attempt{at: time.Now(), took: time.Since(sent), status: a.Status, why: a.Reason + a.Error})
					mu.Unlock()
					if (a.Status != 503 && a.Status != -1) || time.Now().After(deadline) {
						out[i] = a
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				mu.Lock()
				done++
				mu.Unlock()
			})
		}
		inner.Wait()
	})
	return func() []claimResp { wg.Wait(); return out },
		func() []attempt {
			mu.Lock()
			defer mu.Unlock()
			c := append([]attempt(nil), atts...)
			sort.Slice(c, func(i, j int) bool { return c[i].at.Before(c[j].at) })
			return c
		},
		func() int { mu.Lock(); defer mu.Unlock(); return done }
}

// faultFigures are the measurements of one fault: requests sent, 503s (and transport
// errors), the time from the fault to the first 200 after it (recovery), and how long
// claims were refused with 503 after it (the fence: from the fault to the last 503).
type faultFigures struct {
	requests, unavailable int
	recover, fence        time.Duration
	slowest               time.Duration // the longest any request waited for its answer
	why                   map[string]int
}

// figures measures a run: fault is when the fault began, restored when it ended (the
// same instant for a kill, whose repair is the system's own). Time to recover is from
// restored to the first 200 sent after it; the fence from the fault to the last 503.
func figures(atts []attempt, fault, restored time.Time) faultFigures {
	var f faultFigures
	f.recover = -1
	f.why = map[string]int{}
	for _, a := range atts {
		f.requests++
		f.slowest = max(f.slowest, a.took)
		if a.status == 503 || a.status == -1 {
			f.unavailable++
			f.why[a.why]++
			if a.at.After(fault) {
				f.fence = a.at.Sub(fault)
			}
		}
		if a.status == 200 && a.at.Add(-a.took).After(restored) && f.recover < 0 {
			f.recover = a.at.Sub(restored)
		}
	}
	return f
}

func (f faultFigures) String() string {
	return fmt.Sprintf("requests %d, 503s %d, time to recover (first 200 sent after the repair) %s, fence (last 503 after the fault) %s, slowest answer %s; 503s by reason %v",
		f.requests, f.unavailable, f.recover.Round(time.Millisecond), f.fence.Round(time.Millisecond), f.slowest.Round(time.Millisecond), f.why)
}

// TestSentinelFailoverUnderLoad (issue 21, real Redis HA): a gateway and a settler
// reach a primary+replica+3 Sentinels through go-redis's failover client; the primary
// is killed -9 in the middle of a sale. The Sentinels promote the replica, the
// binaries follow it, the sale goes on, and every guarantee holds: accepted ≤ stock,
// every 200 is a row, nothing accepted twice, Redis and the books agree. Time to
// recover and the 503 window are logged (RELIABILITY.md, Stalls, partitions and
// failover). Replication is asynchronous: what the primary acknowledged in its last
// moments may be missing on the replica, which is exactly issue 21's "Redis comes back
// with less than it acknowledged" - the run-id fence and recovery must catch it.
func TestSentinelFailoverUnderLoad(t *testing.T) {
	// In make test again (it was moved to make chaos after one CI run in which no claim
	// was accepted after the failover): since the run-id check (issue 21.2) it passed 3
	// of 3 runs here, beside 2 of 2 before it; if it fails again, the process logs
	// printed with the failure are the evidence to keep.
	ss := startSentinelSet(t)
	f := startFaults(t, faultOpts{redis: ss.custom(), pg: startPG(t),
		gatewayExtra: []string{"FLASH_RECOVERY_INTERVAL=200ms"},
		settlerExtra: []string{"FLASH_RECOVERY_INTERVAL=200ms"},
	})
	const stock, n = 400, 1000
	cmp := f.campaign(f.bl, 1_000_000, 1, sku{"rp-50", stock, 50})
	wait, atts, answered := f.timedSale(cmp, "rp-50", users(testenv.ID(t, "u"), n), 32)
	testenv.Eventually(t, 60*time.Second, "part of the sale is answered", func() bool { return answered() > 150 })
	ss.primary.Kill()
	killed := time.Now()
	t.Logf("primary killed -9 with %d of %d claims answered", answered(), n)
	answers := wait()
	fig := figures(atts(), killed, killed)
	t.Logf("sentinel failover under load: %s", fig)
	if fig.recover < 0 {
		t.Fatal("no claim was accepted after the primary was killed: the binaries did not follow the failover")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if role, err := f.rdb.Do(ctx, "ROLE").Slice(); err != nil || role[0] != "master" {
		t.Fatalf("the failover client's server: role %v (%v), want master", role, err)
	}
	checkSale(t, f.system, cmp, stock, answers)
}
