package api

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/testenv"
)

// TestClaimPathImportsNoDatabase is the STYLE fence: the claim hot path (this package
// and the claimer under it) does not import a database driver or migrations; Postgres
// reaches the API only through the Vouchers interface (gateway/vouchers implements it).
func TestClaimPathImportsNoDatabase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-deps", "./gateway/api")
	cmd.Dir = testenv.ModuleRoot(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "jackc/pgx") || strings.Contains(dep, "golang-migrate") || strings.Contains(dep, "database/sql") {
			t.Errorf("gateway/api imports %s", dep)
		}
	}
}
