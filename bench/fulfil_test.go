package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/testenv"
)

// bench fulfil answers a delivery 200 and counts it by Idempotency-Key: a second call
// with the same key is a repeat (still 200), a call without a key is 400; /stats and
// the figures printed at shutdown say so.
func TestFulfilCountsIdempotencyKeys(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- dispatch(ctx, []string{"fulfil", "--addr", addr}, &out, &errb) }()
	base := "http://" + addr
	testenv.WaitHTTP(t, base+"/stats", 10*time.Second, nil)
	post := func(key string) int {
		req, _ := http.NewRequest(http.MethodPost, base+"/prizes", strings.NewReader(`{"claim_id":"x"}`))
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		key  string
		want int
	}{{"c.1", 200}, {"c.2", 200}, {"c.1", 200}, {"", 400}} {
		if got := post(tc.key); got != tc.want {
			t.Errorf("POST with key %q: %d, want %d", tc.key, got, tc.want)
		}
	}
	resp, err := http.Get(base + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	var s fulfilStats
	err = json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if err != nil || s.Calls != 3 || s.Keys != 2 || s.Repeats != 1 || len(s.Repeated) != 1 || s.Repeated[0] != "c.1" {
		t.Errorf("stats %+v (%v), want 3 calls, 2 keys, 1 repeat of c.1", s, err)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitHeld || !strings.Contains(out.String(), "fulfil: 3 calls, 2 prizes (Idempotency-Keys), 1 repeats") {
			t.Errorf("fulfil exit %d\n%s%s", code, out.String(), errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("fulfil did not stop when interrupted")
	}
	if code, _, errs := call(t, "fulfil", "--addr", "nowhere"); code != exitUsage || !strings.Contains(errs, "--addr") {
		t.Errorf("fulfil --addr nowhere: exit %d %q", code, errs)
	}
}
