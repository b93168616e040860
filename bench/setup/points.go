package setup

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/flashgate/flashgate/bench/traffic"
)

// The points mall traffic model (issue 16): a points_item campaign whose SKUs cost
// Price points, and Users users - bench's own "u-<n>" ids, the ones its traffic model
// claims as - each granted exactly Price x PerUser points through a task of the
// campaign's own (PUT /admin/v1/points/tasks/{task}, then POST /v1/points/grants on the
// public API, as a real source does). Then `bench run --users N` is a rush of users with
// balances for a limited item, and `bench verify` checks the points books.

// Points configures the model (Price 0: off).
type Points struct {
	// Price is each SKU's price in points.
	Price int64
	// Users is how many users get a balance (u-0 .. u-<Users-1>).
	Users int
	// Public is the gateway's public API base URL (the grants).
	Public string
	// Concurrency of the grants (default 16).
	Concurrency int
}

func (p *Points) validate() error {
	if p.Price == 0 {
		return nil
	}
	p.Public, _, _ = strings.Cut(p.Public, ",") // a fleet: the first gateway takes the grants
	u, err := url.Parse(p.Public)
	switch {
	case p.Price < 0 || p.Price > 1_000_000_000:
		return fmt.Errorf("points-price %d: want 1..1000000000", p.Price)
	case p.Users < 1 || p.Users > 10_000_000:
		return fmt.Errorf("points-users %d: want 1..10000000", p.Users)
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("public %q: want a base URL like http://127.0.0.1:8080", p.Public)
	case p.Concurrency < 0 || p.Concurrency > 256:
		return fmt.Errorf("points concurrency %d: want 0..256", p.Concurrency)
	}
	return nil
}

// fund creates the model's task and grants every user its balance (idempotent by
// grant_id: a rerun grants nothing twice).
func fund(ctx context.Context, cfg Config, base string, made *Made) error {
	amount := cfg.Points.Price * cfg.PerUserLimit
	task := "bench-" + cfg.Campaign
	if len(task) > 64 {
		task = task[:64]
	}
	b, err := json.Marshal(map[string]any{"name": "bench points for " + cfg.Campaign, "per_grant_max": amount,
		"per_user_daily_max": amount, "lifetime": "720h", "rotate_key": true})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/admin/v1/points/tasks/"+url.PathEscape(task), bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.Token)
	}
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("points task: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	var out struct{ Key string }
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil || out.Key == "" {
		return fmt.Errorf("points task %s: %s: %s", task, resp.Status, bytes.TrimSpace(body))
	}
	conc := cfg.Points.Concurrency
	if conc == 0 {
		conc = 16
	}
	pub := strings.TrimRight(cfg.Points.Public, "/") + "/v1/points/grants"
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan int)
	for range conc {
		wg.Go(func() {
			for n := range next {
				u := "u-" + strconv.Itoa(n)
				if !traffic.ValidID(u) {
					continue
				}
				b, _ := json.Marshal(map[string]any{"user_id": u, "task": task, "amount": amount, "grant_id": task + ":" + u})
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, pub, bytes.NewReader(b))
				if err == nil {
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("X-Source-Key", out.Key)
					var resp *http.Response
					if resp, err = cfg.Client.Do(req); err == nil {
						msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("grant %s: %s: %s", u, resp.Status, bytes.TrimSpace(msg))
						}
					}
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for n := 0; n < cfg.Points.Users; n++ {
		next <- n
	}
	close(next)
	wg.Wait()
	if first != nil {
		return fmt.Errorf("points grants: %w", first)
	}
	made.PointsTask, made.PointsFunded = task, cfg.Points.Users
	return nil
}
