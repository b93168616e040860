package evict_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/evict"
	"github.com/flashgate/flashgate/internal/testenv"
)

// privateRedis starts a redis-server of the test's own with a maxmemory-policy.
func privateRedis(t *testing.T, policy string) (string, *redis.Client) {
	t.Helper()
	rdb := testenv.PrivateRedis(t, "--maxmemory", "256mb", "--maxmemory-policy", policy)
	addr := rdb.Options().Addr
	return addr, rdb
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestCheckNamesThePolicy(t *testing.T) {
	_, rdb := privateRedis(t, "volatile-lru")
	ctx := ctxFor(t, 10*time.Second)
	err := evict.Check(ctx, rdb)
	if !errors.Is(err, evict.ErrEvicting) || !strings.Contains(err.Error(), "volatile-lru") || !strings.Contains(err.Error(), "FLASH_REDIS_ALLOW_EVICTION") {
		t.Fatalf("volatile-lru: %v; want ErrEvicting naming the policy and the override", err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := evict.Check(ctx, rdb); err != nil {
		t.Fatalf("noeviction: %v", err)
	}
}

// The gateway and the settler refuse to start on a Redis that could evict claim state,
// naming the policy and the override; with the override they start and /readyz reports
// redis_eviction as degraded (200); a policy changed to an evicting one at run time
// without the override makes /readyz 503.
func TestBinariesRefuseAnEvictingRedis(t *testing.T) {
	for _, bin := range []string{"gateway", "settler"} {
		t.Run(bin, func(t *testing.T) {
			exe := testenv.Build(t, "./"+bin)
			addr, rdb := privateRedis(t, "allkeys-lru")
			ctx := ctxFor(t, 2*time.Minute)
			env := func(extra ...string) (string, []string) {
				port := strconv.Itoa(testenv.FreePort(t))
				base := []string{"FLASH_REDIS_ADDR=" + addr, "FLASH_PG_URL=" + testenv.PGURL(),
					"FLASH_KAFKA_BROKERS=" + testenv.BrokerList(), "FLASH_LOG_LEVEL=warn"}
				if bin == "gateway" {
					base = append(base, "FLASH_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)), "FLASH_ADMIN_ADDR=127.0.0.1:"+port)
				} else {
					base = append(base, "FLASH_SETTLER_ADDR=127.0.0.1:"+port, "FLASH_SETTLER_TOPIC="+testenv.ID(t, "evict"),
						"FLASH_SETTLER_GROUP="+testenv.ID(t, "evict"), "FLASH_EXPIRE_INTERVAL=0", "FLASH_RECONCILE_INTERVAL=0")
				}
				return "http://127.0.0.1:" + port + "/readyz", append(base, extra...)
			}

			_, e := env()
			p := testenv.Start(t, exe, e)
			err := p.Wait(t, 30*time.Second)
			if err == nil {
				t.Fatal("started on a Redis with maxmemory-policy allkeys-lru")
			}
			if out := p.Output(); !strings.Contains(out, "allkeys-lru") || !strings.Contains(out, "-allow-eviction") {
				t.Fatalf("refusal does not name the policy and the override:\n%s", out)
			}

			url, e := env("FLASH_REDIS_ALLOW_EVICTION=true")
			p = testenv.Start(t, exe, e)
			p.WaitReady(t, url)
			code, body := get(t, url)
			if code != http.StatusOK || !strings.Contains(body, "degraded") || !strings.Contains(body, "redis_eviction") || !strings.Contains(body, "allkeys-lru") {
				t.Fatalf("/readyz with -allow-eviction: %d %s; want 200 naming redis_eviction degraded", code, body)
			}
			p.Kill()

			// Started on noeviction, then switched at run time: not ready.
			if err := rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
				t.Fatal(err)
			}
			url, e = env()
			p = testenv.Start(t, exe, e)
			p.WaitReady(t, url)
			if code, body := get(t, url); code != http.StatusOK || strings.Contains(body, "redis_eviction") {
				t.Fatalf("/readyz on noeviction: %d %s", code, body)
			}
			if err := rdb.ConfigSet(ctx, "maxmemory-policy", "volatile-ttl").Err(); err != nil {
				t.Fatal(err)
			}
			if code, body := get(t, url); code != http.StatusServiceUnavailable || !strings.Contains(body, "redis_eviction") || !strings.Contains(body, "volatile-ttl") {
				t.Fatalf("/readyz after CONFIG SET volatile-ttl: %d %s; want 503 naming redis_eviction", code, body)
			}
		})
	}
}
