package reconcile_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/flashgate/flashgate/internal/testenv"
)

// The settlement packages run in the settler, which does not serve HTTP with fasthttp
// (STYLE: dependency fences), and internal/recovery is linked by the gateway too, so it
// must not pull in the settler's packages.
func TestDependencyFences(t *testing.T) {
	for _, tc := range []struct {
		pkg     string
		forbids []string
	}{
		{"./settler/relay", []string{"github.com/valyala/fasthttp"}},
		{"./settler/expire", []string{"github.com/valyala/fasthttp"}},
		{"./settler/reconcile", []string{"github.com/valyala/fasthttp"}},
		{"./internal/recovery", []string{"github.com/valyala/fasthttp", "github.com/flashgate/flashgate/settler/"}},
	} {
		cmd := exec.Command("go", "list", "-deps", tc.pkg)
		cmd.Dir = testenv.ModuleRoot(t)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", tc.pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range tc.forbids {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s imports %s", tc.pkg, dep)
				}
			}
		}
	}
}
