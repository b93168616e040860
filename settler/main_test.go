package main

import (
	"context"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/testenv"
)

// TestKill9MidStream kills the settler binary with SIGKILL while it is writing a stream
// of claims, checks it never committed an offset past a claim that is not a row, then
// restarts it and checks every claim is exactly one row with one reserve entry.
// settlerEnv is the environment of a settler binary on the dev stack that serves on
// port and settles topic in group, quietly, plus extra settings.
func settlerEnv(port int, topic, group string, extra ...string) []string {
	return append([]string{
		"FLASH_REDIS_ADDR=" + testenv.RedisAddr(),
		"FLASH_PG_URL=" + testenv.PGURL(),
		"FLASH_KAFKA_BROKERS=" + testenv.BrokerList(),
		"FLASH_SETTLER_ADDR=127.0.0.1:" + strconv.Itoa(port),
		"FLASH_SETTLER_TOPIC=" + topic,
		"FLASH_SETTLER_GROUP=" + group,
		"FLASH_LOG_LEVEL=warn",
	}, extra...)
}

func TestKill9MidStream(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	const total, first = 3000, 1500
	c, recs := testenv.DurableCampaign(t, rdb, pg, total)
	topic, group := testenv.NewTopic(t), testenv.ID(t, "settler-test")
	kcl := testenv.Producer(t)

	port := testenv.FreePort(t)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	// Many small transactions one after another (150 for the first 1,500 claims, each
	// with its commit's fsync), so the kill lands between or inside one: with the
	// defaults (four writers, large polls) a fast settler could write all 1,500 before
	// the test saw the first row, and the test then refused to call that a mid-stream
	// kill (seen once under a parallel suite).
	env := settlerEnv(port, topic, group, append(c.SettlerEnv(), "FLASH_SETTLER_BATCH=10", "FLASH_SETTLER_WRITERS=1")...)
	bin := testenv.Build(t, "./settler")
	p := testenv.Start(t, bin, env)
	p.WaitReady(t, base+"/readyz")

	krs := testenv.Produce(t, kcl, topic, recs[:first])
	var atKill int64
	testenv.Eventually(t, 60*time.Second, "the settler to start writing", func() bool {
		atKill = c.ReadBooks(t, pg).Claims
		return atKill > 0
	})
	p.Kill()
	if atKill >= first {
		t.Fatalf("the settler had written all %d claims before the kill; the test did not kill it mid-stream", first)
	}
	t.Logf("killed with %d of %d claims written", atKill, first)

	// Nothing committed may be missing from Postgres: every record below a committed
	// offset must be a row.
	committed := testenv.Committed(t, group, topic)
	rows := c.ClaimIDs(t, pg)
	covered := 0
	for i, kr := range krs {
		if kr.Offset < committed[kr.Partition] {
			covered++
			if !rows[recs[i].ClaimID] {
				t.Fatalf("offset %d of partition %d committed but claim %s is not a row", kr.Offset, kr.Partition, recs[i].ClaimID)
			}
		}
	}
	t.Logf("%d records covered by committed offsets at the kill, %d rows", covered, len(rows))

	// More claims arrive while the settler is down; then it comes back.
	testenv.Produce(t, kcl, topic, recs[first:])
	p2 := testenv.Start(t, bin, env)
	p2.WaitReady(t, base+"/readyz")
	testenv.Eventually(t, 120*time.Second, "every claim to be a row after the restart", func() bool {
		return c.ReadBooks(t, pg).Claims >= total
	})
	b := c.ReadBooks(t, pg)
	want := testenv.Books{Claims: total, DistinctRequests: total, ClaimValue: total * c.Value,
		Reserves: total, ReserveAmount: total * c.Value}
	if b != want {
		t.Fatalf("books after kill -9 and restart: got %+v; want %+v", b, want)
	}
	ids := c.ClaimIDs(t, pg)
	for _, r := range recs {
		if !ids[r.ClaimID] {
			t.Fatalf("claim %s missing", r.ClaimID)
		}
	}
	testenv.Eventually(t, 10*time.Second, "outbox and inflight emptied", func() bool {
		ob, inf := c.Leftovers(t)
		return ob == 0 && inf == 0
	})
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/metrics": "flashgate_settler_claims_written_total",
		"/readyz":  "ready",
	} {
		if body := get(t, base+path); !strings.Contains(body, want) {
			t.Fatalf("GET %s: %q does not contain %q", path, body, want)
		}
	}
	if err := p2.Stop(); err != nil {
		t.Fatalf("SIGTERM: settler exited with %v, want a clean exit", err)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}

func TestFlags(t *testing.T) {
	bin := testenv.Build(t, "./settler")
	tests := []struct {
		name     string
		args     []string
		env      []string
		wantCode int
		wantOut  string
	}{
		{"help", []string{"-h"}, nil, 0, "FLASH_SETTLER_GROUP"},
		{"bad env integer", nil, []string{"FLASH_SETTLER_BATCH=many"}, 2, "FLASH_SETTLER_BATCH"},
		{"batch out of range", []string{"-batch", "-5"}, nil, 2, "-batch (FLASH_SETTLER_BATCH)"},
		{"writers out of range", []string{"-writers", "-1"}, nil, 2, "-writers (FLASH_SETTLER_WRITERS)"},
		{"writers env out of range", nil, []string{"FLASH_SETTLER_WRITERS=33"}, 2, "-writers (FLASH_SETTLER_WRITERS)"},
		{"help shows fetch min bytes", []string{"-h"}, nil, 0, "FLASH_SETTLER_FETCH_MIN_BYTES"},
		{"fetch min bytes zero", []string{"-fetch-min-bytes", "0"}, nil, 2, "-fetch-min-bytes (FLASH_SETTLER_FETCH_MIN_BYTES): must be 1..1048576"},
		{"fetch min bytes env too large", nil, []string{"FLASH_SETTLER_FETCH_MIN_BYTES=2097152"}, 2, "-fetch-min-bytes (FLASH_SETTLER_FETCH_MIN_BYTES)"},
		{"retry max below min", []string{"-retry-min", "2s", "-retry-max", "1s"}, nil, 2, "-retry-max"},
		{"no brokers", []string{"-brokers", " , "}, nil, 2, "-brokers"},
		{"no brokers by the one name", []string{"-kafka-brokers", " , "}, nil, 2, "-kafka-brokers (FLASH_KAFKA_BROKERS): "},
		{"the old name still works and says so", []string{"-brokers", " , "}, nil, 2, "flag -brokers is deprecated, use -kafka-brokers"},
		{"help names the one connection flags", []string{"-h"}, nil, 0, "-redis-addr"},
		{"bad log level", []string{"-log-level", "loud"}, nil, 2, "-log-level"},
		{"unknown flag", []string{"-nope"}, nil, 2, "-nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tt.args...)
			cmd.Env = append(cmd.Environ(), tt.env...)
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode || !strings.Contains(string(out), tt.wantOut) {
				t.Fatalf("exit %d, output:\n%s\nwant exit %d and %q", code, out, tt.wantCode, tt.wantOut)
			}
		})
	}
}
