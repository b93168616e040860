// Command migrate applies flashgate's Postgres migrations and the grants of the binaries'
// least-privilege roles (internal/store), then exits. It must run as the schema's owner:
// the gateway, the settler and riskctl, when they connect as their own roles, only check
// that the schema is at the version they need (docs/SECURITY.md "Migrations").
//
//	FLASH_PG_URL=postgres://flashgate:...@host/flashgate bin/migrate
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/flashgate/flashgate/internal/flagenv"
	"github.com/flashgate/flashgate/internal/store"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: migrate [flags]\n\nApplies flashgate's schema migrations and the grants of its roles, as the schema owner.\n\nflags:")
		fs.PrintDefaults()
	}
	var pgURL string
	var timeout time.Duration
	f := flagenv.New(fs)
	f.PGURL(&pgURL, "Postgres URL of the schema's owner (prefer the environment or PGPASSWORD for the password)")
	f.Duration(&timeout, "timeout", "FLASH_MIGRATE_TIMEOUT", 2*time.Minute, "give up after this long")
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "migrate:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	pool, err := store.Open(ctx, pgURL, 2)
	if err != nil {
		fmt.Fprintln(stderr, "migrate:", err)
		return 1
	}
	defer pool.Close()
	owner, err := store.CanMigrate(ctx, pool)
	if err == nil && !owner {
		err = errors.New("this role may not change the schema: connect as the schema's owner")
	}
	if err == nil {
		err = store.Prepare(ctx, pool)
	}
	if err != nil {
		fmt.Fprintln(stderr, "migrate:", err)
		return 1
	}
	v, _, err := store.SchemaVersion(ctx, pool)
	if err != nil {
		fmt.Fprintln(stderr, "migrate:", err)
		return 1
	}
	fmt.Fprintf(stdout, "migrate: schema at version %d, grants applied\n", v)
	return 0
}
