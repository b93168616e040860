package testenv

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/catalog"
)

// Quiet discards logs.
var Quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Env is a test's view of the dev stack: its Redis, its Postgres and the catalog on both.
type Env struct {
	T   testing.TB
	RDB *redis.Client
	PG  *pgxpool.Pool
	Cat *catalog.Catalog
}

// New connects to the dev stack (failing the test when it is down).
func New(t testing.TB) *Env {
	t.Helper()
	rdb := Redis(t)
	pg := PG(t)
	return &Env{T: t, RDB: rdb, PG: pg, Cat: catalog.New(pg, rdb)}
}

// With returns an Env on another Redis (a private redis-server) and the same Postgres.
func (e *Env) With(rdb *redis.Client) *Env {
	return &Env{T: e.T, RDB: rdb, PG: e.PG, Cat: catalog.New(e.PG, rdb)}
}

// Private is New with a redis-server of the test's own (no persistence, a free loopback
// port, killed when the test ends) in place of the shared one: for tests that read its
// statistics (INFO commandstats), which other agents' work on the shared server would
// move. Postgres stays the shared one (every id is fresh).
func Private(t testing.TB) *Env {
	t.Helper()
	rdb := PrivateRedis(t)
	pg := PG(t)
	return &Env{T: t, RDB: rdb, PG: pg, Cat: catalog.New(pg, rdb)}
}

// PrivateRedis starts a redis-server of the test's own on a free loopback port (no
// persistence, then args, e.g. "--maxmemory-policy", "allkeys-lru"), killed when the
// test ends, and returns a client of it once it answers.
func PrivateRedis(t testing.TB, args ...string) *redis.Client {
	t.Helper()
	port := strconv.Itoa(FreePort(t))
	Start(t, "redis-server", nil, append([]string{"--bind", "127.0.0.1", "--port", port,
		"--save", "", "--appendonly", "no"}, args...)...)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port})
	t.Cleanup(func() { rdb.Close() })
	Eventually(t, 10*time.Second, "private redis-server to answer", func() bool {
		return rdb.Ping(context.Background()).Err() == nil
	})
	return rdb
}

// Ctx is a context bounded to d, cancelled when the test ends.
func Ctx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// CommandStat is one command's line of INFO commandstats.
type CommandStat struct {
	Calls int64 // times it ran
	Usec  int64 // microseconds Redis spent in it (a script call's includes its commands)
}

// CommandStats returns INFO commandstats of e's Redis ("hmget" -> calls, usec) since it
// started; commands run by scripts are counted too.
func (e *Env) CommandStats() map[string]CommandStat {
	e.T.Helper()
	stats := map[string]CommandStat{}
	for name, fields := range e.info("commandstats") {
		name, ok := strings.CutPrefix(name, "cmdstat_")
		if !ok {
			continue
		}
		var st CommandStat
		for _, kv := range strings.Split(fields, ",") {
			k, v, _ := strings.Cut(kv, "=")
			var dst *int64
			switch k {
			case "calls":
				dst = &st.Calls
			case "usec":
				dst = &st.Usec
			default:
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				e.T.Fatalf("commandstats line %s:%s: %v", name, fields, err)
			}
			*dst = n
		}
		stats[name] = st
	}
	return stats
}

// MainThreadCPU is the CPU time (user + system) e's Redis main thread has used (INFO
// cpu): what running commands and scripts costs it, whatever else the machine runs.
func (e *Env) MainThreadCPU() time.Duration {
	e.T.Helper()
	var sum float64
	for k, v := range e.info("cpu") {
		if k == "used_cpu_user_main_thread" || k == "used_cpu_sys_main_thread" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				e.T.Fatalf("INFO cpu line %s:%s: %v", k, v, err)
			}
			sum += f
		}
	}
	return time.Duration(sum * float64(time.Second))
}

// info is one INFO section of e's Redis as name -> value.
func (e *Env) info(section string) map[string]string {
	e.T.Helper()
	info, err := e.RDB.Info(Ctx(e.T, 5*time.Second), section).Result()
	if err != nil {
		e.T.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && !strings.HasPrefix(k, "#") {
			out[k] = v
		}
	}
	return out
}

// Gate is a recovery.CatchUp (and anything else that waits) that a test opens: Wait
// closes Entered on its first call and returns when Open is closed (or ctx ends), so a
// test sees what the system does while a recovery waits for the settler.
type Gate struct {
	Entered, Open chan struct{}
	once          sync.Once
}

// NewGate is a closed gate.
func NewGate() *Gate { return &Gate{Entered: make(chan struct{}), Open: make(chan struct{})} }

// Wait blocks until the gate is open.
func (g *Gate) Wait(ctx context.Context) error {
	g.once.Do(func() { close(g.Entered) })
	select {
	case <-g.Open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
