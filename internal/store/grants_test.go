package store_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/store"
	"github.com/flashgate/flashgate/internal/testenv"
)

func TestVersionCheck(t *testing.T) {
	if store.LatestVersion() < 2 {
		t.Fatalf("LatestVersion = %d; the embedded migrations go to at least 2", store.LatestVersion())
	}
	for _, c := range []struct {
		v     uint
		dirty bool
		want  string // "" = ok
	}{
		{2, false, ""},
		{3, false, ""}, // a newer binary migrated: this one still runs
		{1, false, "schema is at version 1, this binary needs 2"},
		{0, false, "schema is at version 0, this binary needs 2"},
		{2, true, "failed half-way (dirty)"},
	} {
		err := store.VersionOK(c.v, c.dirty, 2)
		if (err == nil) != (c.want == "") || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("version %d dirty %v: %v, want %q", c.v, c.dirty, err, c.want)
		}
	}
}

// TestPrepareByRole: the owner may migrate (and grants); the gateway's role may not,
// and Prepare under it only checks the version, which the dev stack is at.
func TestPrepareByRole(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	owner := testenv.PG(t)
	if ok, err := store.CanMigrate(ctx, owner); err != nil || !ok {
		t.Fatalf("owner CanMigrate = %v, %v", ok, err)
	}
	if err := store.Prepare(ctx, owner); err != nil {
		t.Fatalf("Prepare as the owner: %v", err)
	}
	u, err := url.Parse(testenv.PGURL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(store.RoleGateway, store.RoleGateway+"_dev")
	gw, err := store.Open(ctx, u.String(), 2)
	if err != nil {
		t.Fatalf("%v (the role is created by `make up`)", err)
	}
	defer gw.Close()
	if ok, err := store.CanMigrate(ctx, gw); err != nil || ok {
		t.Fatalf("gateway role CanMigrate = %v, %v; want false", ok, err)
	}
	if err := store.Prepare(ctx, gw); err != nil {
		t.Fatalf("Prepare as the gateway role: %v", err)
	}
	v, dirty, err := store.SchemaVersion(ctx, gw)
	if err != nil || dirty || v < store.LatestVersion() {
		t.Fatalf("SchemaVersion as the gateway role = %d, %v, %v", v, dirty, err)
	}
}
