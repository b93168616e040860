package risk_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/testenv"
)

// The claim path imports internal/risk (and decisionlog): they must not pull in a
// database driver or the HTTP server. The audit (pgx) lives in internal/risk/audit.
func TestClaimPathImportsNoDatabase(t *testing.T) {
	for _, pkg := range []string{"./internal/risk", "./internal/risk/decisionlog"} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "list", "-deps", pkg)
		cmd.Dir = testenv.ModuleRoot(t)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.Contains(dep, "jackc/pgx") || strings.Contains(dep, "valyala/fasthttp") || strings.Contains(dep, "golang-migrate") {
				t.Errorf("%s imports %s", pkg, dep)
			}
		}
	}
}
