// Package testenv is flashgate's one test kit (tests only; no binary links it):
//
//   - testenv.go: connections to the real dev stack (Redis, Postgres, the Kafka-protocol
//     broker that `make up` starts), building and running the project's own binaries so
//     a test can kill -9 them, polling;
//   - env.go: Env (a test's Redis, Postgres and catalog), a private redis-server, INFO;
//   - ids.go: fresh ids (ID) and the one claim-id generator (NewClaimID);
//   - campaign.go: the one campaign builder (Env.Campaign with a Spec; NewCampaign and
//     Env.StockCampaign are presets of it) and what a test reads of a campaign's books;
//   - fixture.go: claims decided by claim.lua (Campaign.Decide), durable/void marks, the
//     producer, topics of a test's own, committed offsets, a cutting TCP proxy;
//   - settle.go: claims a gateway died on (ScriptClaim), outbox records and the reference
//     settler (Write, Settler);
//   - risk.go: rules set directly in Redis and a decision recorder;
//   - kfake.go: an in-process kfake cluster with fault hooks, for broker faults.
//
// Isolation is the default: every builder takes fresh ids (a business line of the
// test's own for every campaign), so tests of different packages that run in parallel
// under `go test ./...` against the one dev stack never meet; a settler a test starts
// must be confined to the test's business line and campaign (Campaign.SettlerEnv).
// The claimer helpers live beside the claimer (gateway/claimer/claimertest): this
// package is on layer 1 and imports no binary's tree.
//
// It never mocks a server and never skips: when the stack is down a test fails with a
// message saying how to start it.
package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/flagenv"
	"github.com/flashgate/flashgate/internal/store"
)

const hint = "dev stack not reachable: run `make up` (or run the tests with `make test`)"

func env(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
}

// RedisAddr, PGURL and Brokers are the dev stack's addresses (FLASH_* or the defaults).
func RedisAddr() string { return env("FLASH_REDIS_ADDR", flagenv.DefaultRedisAddr) }
func PGURL() string     { return env("FLASH_PG_URL", flagenv.DefaultPGURL) }
func Brokers() []string {
	return flagenv.Brokers(env("FLASH_KAFKA_BROKERS", flagenv.DefaultKafkaBrokers))
}
func BrokerList() string { return strings.Join(Brokers(), ",") }

// Redis returns a client of the dev stack's Redis, closed when the test ends.
func Redis(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: RedisAddr(), DialTimeout: 2 * time.Second,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, PoolSize: 32})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		t.Fatalf("redis %s: %v; %s", RedisAddr(), err, hint)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

var migrateOnce sync.Once
var migrateErr error

// PG returns a pool of the dev stack's Postgres with every migration applied, closed
// when the test ends.
func PG(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := store.Open(ctx, PGURL(), 16)
	if err != nil {
		t.Fatalf("postgres: %v; %s", err, hint)
	}
	migrateOnce.Do(func() { migrateErr = store.Migrate(pool) })
	if migrateErr != nil {
		pool.Close()
		t.Fatalf("migrate: %v", migrateErr)
	}
	t.Cleanup(pool.Close)
	return pool
}

// RequireBroker fails the test when the broker does not accept connections.
func RequireBroker(t testing.TB) {
	t.Helper()
	for _, b := range Brokers() {
		c, err := net.DialTimeout("tcp", b, 2*time.Second)
		if err != nil {
			t.Fatalf("broker %s: %v; %s", b, err, hint)
		}
		c.Close()
	}
}

// GroupAtEnd commits, for a consumer group that does not exist yet, the current end
// offset of every partition of topic, so a settler started in that group settles only
// what is produced from now on. A test's settler in a fresh group would otherwise start
// at the oldest record of the shared dev broker's flash.claims and re-read everything
// every earlier test and benchmark produced (hundreds of MB on a used stack) before it
// reached the test's own claims. The product is unchanged: a new production group still
// starts at the oldest record.
func GroupAtEnd(t testing.TB, brokers []string, group, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatalf("group %s at the end of %s: %v", group, topic, err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err == nil {
		err = adm.CommitAllOffsets(ctx, group, ends.Offsets())
	}
	if err != nil {
		t.Fatalf("group %s at the end of %s: %v; %s", group, topic, err, hint)
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var (
	buildMu  sync.Mutex
	builds   = map[string]string{}
	buildDir string
)

// ModuleRoot is the repository's root (the folder holding go.mod).
func ModuleRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("testenv: cannot locate source")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Build builds a main package of this module ("./settler") once per test process, with
// the race detector when the tests run with it, and returns the binary's path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := builds[pkg]; ok {
		return p
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "flashgate-testbin-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d
	}
	out := filepath.Join(buildDir, strings.ReplaceAll(strings.Trim(pkg, "./"), "/", "_"))
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = ModuleRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	builds[pkg] = out
	return out
}

// Proc is a running binary of the project.
type Proc struct {
	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	out  *testWriter
}

// Start runs bin with args and extra environment (on top of this process's), logging its
// output to the test log. The process is killed when the test ends if still running.
func Start(t testing.TB, bin string, env []string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	w := &testWriter{t: t, name: filepath.Base(bin)}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &Proc{t: t, cmd: cmd, done: make(chan struct{}), out: w}
	go func() { p.err = cmd.Wait(); w.close(); close(p.done) }()
	t.Cleanup(func() { p.Kill() })
	return p
}

// Output is everything the process wrote to stdout and stderr so far (tests that
// check what a binary logs, e.g. that no secret appears in it).
func (p *Proc) Output() string {
	p.out.mu.Lock()
	defer p.out.mu.Unlock()
	return string(p.out.all)
}

// Wait waits up to d for the process to exit by itself and returns its exit error;
// it fails the test when the process is still running after d.
func (p *Proc) Wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("%s still running after %s", filepath.Base(p.cmd.Path), d)
		return nil
	}
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Signal sends sig (SIGSTOP, SIGCONT, ...).
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop sends SIGTERM and waits up to 30 s for a clean exit; it returns the exit error.
func (p *Proc) Stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(30 * time.Second):
		p.Kill()
		return fmt.Errorf("did not stop within 30s of SIGTERM")
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitReady polls url until it answers 200, failing the test after 30 s or if the
// process exits first.
func (p *Proc) WaitReady(t testing.TB, url string) {
	t.Helper()
	WaitHTTP(t, url, 30*time.Second, p.done)
}

// WaitHTTP polls url until it answers 200 within d. A non-nil dead channel that closes
// ends the wait early with a failure.
func WaitHTTP(t testing.TB, url string, d time.Duration, dead <-chan struct{}) {
	t.Helper()
	cl := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-dead:
			t.Fatalf("process exited before %s was ready (last: %s)", url, last)
		default:
		}
		resp, err := cl.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready after %s (last: %s)", url, d, last)
}

// Eventually polls cond every 50 ms until it returns true, failing after d with msg.
func Eventually(t testing.TB, d time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("not within %s: %s", d, msg)
}

type testWriter struct {
	mu     sync.Mutex
	t      testing.TB
	name   string
	buf    []byte
	all    []byte
	closed bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return len(b), nil
	}
	w.buf = append(w.buf, b...)
	w.all = append(w.all, b...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		w.t.Logf("[%s] %s", w.name, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	return len(b), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
}
