package testenv

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
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
	port := strconv.Itoa(FreePort(t))
	Start(t, "redis-server", nil, "--bind", "127.0.0.1", "--port", port,
		"--save", "", "--appendonly", "no")
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port})
	t.Cleanup(func() { rdb.Close() })
	Eventually(t, 10*time.Second, "private redis-server to answer", func() bool {
		return rdb.Ping(context.Background()).Err() == nil
	})
	pg := PG(t)
	return &Env{T: t, RDB: rdb, PG: pg, Cat: catalog.New(pg, rdb)}
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
