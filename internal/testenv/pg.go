package testenv

// PrivatePG is a Postgres server of a test's own: initdb into a temporary folder,
// started as the postgres OS user on a free loopback port, stopped when the test ends.
// For a test that must not share the dev stack's database: one that crashes Postgres,
// or one whose rows other packages' settlers (which act on every campaign) would touch.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flashgate/flashgate/internal/store"
)

type PrivatePG struct {
	t        testing.TB
	Port     int
	dir, bin string
}

// StartPG initialises and starts a private server (a few seconds).
func StartPG(t testing.TB) *PrivatePG {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		t.Fatal("initdb not found under /usr/lib/postgresql/*/bin; run `make up` (it installs Postgres)")
	}
	pu, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("OS user postgres: %v (it comes with Debian's postgresql package)", err)
	}
	dir, err := os.MkdirTemp("", "flashgate-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	uid, _ := strconv.Atoi(pu.Uid)
	gid, _ := strconv.Atoi(pu.Gid)
	// The server refuses to run as root: the folder belongs to postgres.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatalf("chown %s to postgres: %v (a private Postgres needs root)", dir, err)
	}
	s := &PrivatePG{t: t, Port: FreePort(t), dir: dir, bin: filepath.Dir(bins[0])}
	s.run(60*time.Second, "initdb", "-D", s.Data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
	s.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = exec.CommandContext(ctx, "runuser", "-u", "postgres", "--", filepath.Join(s.bin, "pg_ctl"), "-D", s.Data(),
			"-m", "immediate", "-w", "stop").Run()
	})
	return s
}

// Data is the cluster's data folder.
func (s *PrivatePG) Data() string { return filepath.Join(s.dir, "data") }

// URL is the superuser's connection URL.
func (s *PrivatePG) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.Port)
}

func (s *PrivatePG) run(d time.Duration, tool string, args ...string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", filepath.Join(s.bin, tool)}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
}

// Start (re)starts the server after Crash.
func (s *PrivatePG) Start() {
	s.t.Helper()
	s.run(60*time.Second, "pg_ctl", "-D", s.Data(), "-l", filepath.Join(s.dir, "log"), "-w", "-t", "50",
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=100", s.Port, s.dir), "start")
}

// Crash stops the server the way a crash does (immediate: no checkpoint; the restart
// replays the WAL), dropping every connection.
func (s *PrivatePG) Crash() {
	s.run(30*time.Second, "pg_ctl", "-D", s.Data(), "-m", "immediate", "-w", "stop")
}

// Pool returns a pool with every migration applied, closed when the test ends.
func (s *PrivatePG) Pool(maxConns int32) *pgxpool.Pool {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := store.Open(ctx, s.URL(), maxConns)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := store.Migrate(pool); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(pool.Close)
	return pool
}
