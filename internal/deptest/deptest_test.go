// Package deptest holds every dependency fence of the module in one test (STYLE 14, in
// the manner of tailscale's tstest/deptest): the layers of DESIGN.md "Layers", what
// each binary may link, and what a few packages may import. The package has no code
// of its own: it reads `go list -deps -json` of the whole module, without tests, so
// it sees exactly what is compiled into the binaries.
package deptest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"
)

const module = "github.com/flashgate/flashgate"

// pkg is the part of `go list -json` the fences read.
type pkg struct {
	ImportPath string
	Name       string
	Standard   bool
	Imports    []string
	Deps       []string
}

// graph is every package the module's packages build with (module and external).
type graph map[string]*pkg

func loadGraph(t *testing.T) graph {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-deps", "-json", module+"/...")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	g := graph{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		g[p.ImportPath] = &p
	}
	if len(g) == 0 {
		t.Fatal("go list listed no package")
	}
	return g
}

// rel is a module package's path inside the module ("gateway/api"); "" for others.
func rel(path string) string {
	if path == module {
		return "."
	}
	if r, ok := strings.CutPrefix(path, module+"/"); ok {
		return r
	}
	return ""
}

// chain is the import path from -> ... -> to, read from the graph (breadth first,
// so the shortest), each module package written inside the module.
func (g graph) chain(from, to string) string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == to {
			var path []string
			for p := to; p != ""; p = prev[p] {
				path = append(path, short(p))
			}
			for i, j := 0, len(path)-1; i < j; i, j = i+1, j-1 {
				path[i], path[j] = path[j], path[i]
			}
			return strings.Join(path, " -> ")
		}
		if p := g[cur]; p != nil {
			for _, imp := range p.Imports {
				if _, seen := prev[imp]; !seen {
					prev[imp] = cur
					queue = append(queue, imp)
				}
			}
		}
	}
	return short(from) + " -> ... -> " + short(to)
}

func short(path string) string {
	if r := rel(path); r != "" {
		return r
	}
	return path
}

// The layers (DESIGN.md "Layers"): a package imports only packages on its own layer or
// below, and on the top layer only packages of its own tree - the binaries are
// siblings, none imports another's packages.
//
//	0  scripts            the Lua scripts and their embed (go-redis scripts)
//	1  internal/...       what the binaries share, and the test kits
//	2  gateway, settler, riskctl, bench, migrate, devbroker   one tree per binary
var trees = map[string]int{
	"scripts":   0,
	"internal":  1,
	"gateway":   2,
	"settler":   2,
	"riskctl":   2,
	"bench":     2,
	"migrate":   2,
	"devbroker": 2,
	"e2e":       2, // tests only; its non-test package is a doc comment
}

// tree is the first element of a module package's path.
func tree(r string) string {
	t, _, _ := strings.Cut(r, "/")
	return t
}

// testKits are the packages only tests may import: none is linked into a binary.
var testKits = map[string]string{
	"internal/testenv":            "test kit",
	"gateway/claimer/claimertest": "in-process claimer for tests",
	"internal/faultproxy":         "fault-injecting proxy for tests",
}

// stdlibOnly are the shared formats every side reads: internal/claim (the flash.claims
// record, decoded by every binary) and internal/voucher (the API's voucher types).
var stdlibOnly = map[string]bool{"internal/claim": true, "internal/voucher": true}

// badDeps: a package (and everything it links) must not link these prefixes, and why.
var badDeps = map[string]map[string]string{
	"gateway": {
		module + "/settler/": "gateway never imports settler (sibling binaries)",
	},
	"settler": {
		module + "/gateway/":          "settler never imports gateway (sibling binaries)",
		"github.com/valyala/fasthttp": "the settler serves no HTTP with fasthttp",
	},
	"gateway/api": {
		"github.com/jackc/pgx":      "the claim path reaches Postgres only through the Vouchers interface",
		"github.com/golang-migrate": "the claim path does not run migrations",
		"database/sql":              "the claim path imports no database driver",
	},
	"gateway/claimer": {
		"github.com/jackc/pgx":      "the claim path imports no database driver",
		"github.com/golang-migrate": "the claim path does not run migrations",
		"database/sql":              "the claim path imports no database driver",
	},
	"internal/risk": {
		"github.com/jackc/pgx":        "the claim path imports internal/risk; the audit (pgx) lives in internal/risk/audit",
		"github.com/valyala/fasthttp": "internal/risk serves no HTTP",
		"github.com/golang-migrate":   "the claim path does not run migrations",
	},
	"internal/risk/decisionlog": {
		"github.com/jackc/pgx":        "the claim path imports decisionlog",
		"github.com/valyala/fasthttp": "decisionlog serves no HTTP",
		"github.com/golang-migrate":   "the claim path does not run migrations",
	},
	"internal/recovery": {
		"github.com/valyala/fasthttp": "recovery runs in the settler, which serves no fasthttp",
		module + "/settler/":          "the gateway links recovery too",
		module + "/gateway/":          "the settler links recovery too",
	},
	"settler/relay":      {"github.com/valyala/fasthttp": "the settler serves no HTTP with fasthttp"},
	"settler/expire":     {"github.com/valyala/fasthttp": "the settler serves no HTTP with fasthttp"},
	"internal/reconcile": {"github.com/valyala/fasthttp": "the settler links reconcile, and serves no HTTP with fasthttp"},
}

// badImports: a direct import that the layers allow but the design does not.
var badImports = map[string]map[string]string{
	"gateway/vouchers": {
		"gateway/api": "the Postgres adapter implements the interfaces the HTTP package declares; it does not import it",
	},
}

// known are today's violations, each to be removed by the commit that fixes it; the
// test fails on a violation not listed here and on an entry that no longer happens.
var known = map[string]bool{}

func TestFences(t *testing.T) {
	g := loadGraph(t)
	var found []string
	report := func(msg string) { found = append(found, msg) }

	var mods []string
	for path := range g {
		if rel(path) != "" {
			mods = append(mods, path)
		}
	}
	sort.Strings(mods)
	for _, path := range mods {
		p, r := g[path], rel(path)
		layer, ok := trees[tree(r)]
		if !ok {
			report("package " + r + " is on no layer: give its tree a layer in DESIGN.md \"Layers\" and in this test")
			continue
		}
		// Layers: every direct module import is on this layer or below; on the top
		// layer, in this package's own tree.
		for _, imp := range p.Imports {
			ir := rel(imp)
			if ir == "" {
				continue
			}
			il, ok := trees[tree(ir)]
			switch {
			case !ok:
			case il > layer:
				report("upward import " + r + " -> " + ir + ": layer " + itoa(layer) + " imports layer " + itoa(il))
			case il == layer && layer == 2 && tree(ir) != tree(r):
				report("sibling import " + r + " -> " + ir + ": the binaries' trees never import each other")
			}
			if why, bad := badImports[r][ir]; bad {
				report("import " + r + " -> " + ir + ": " + why)
			}
		}
		// Test kits are never linked into a binary; nor is the testing package.
		if p.Name == "main" {
			for _, dep := range p.Deps {
				if why, kit := testKits[rel(dep)]; kit {
					report("binary " + r + " links the " + why + " " + rel(dep) + ": " + g.chain(path, dep))
				}
				if dep == "testing" {
					report("binary " + r + " links the testing package: " + g.chain(path, dep))
				}
			}
		}
		// The shared formats: standard library only.
		if stdlibOnly[r] {
			for _, dep := range p.Deps {
				if d := g[dep]; d != nil && !d.Standard {
					report(r + " links " + short(dep) + " (standard library only): " + g.chain(path, dep))
				}
			}
		}
		// What a package (and so a binary) must not link.
		if bans := badDeps[r]; bans != nil {
			for _, dep := range p.Deps {
				for prefix, why := range bans {
					if dep == strings.TrimSuffix(prefix, "/") || strings.HasPrefix(dep, prefix) {
						report(r + " links " + short(dep) + " (" + why + "): " + g.chain(path, dep))
					}
				}
			}
		}
	}
	for _, tc := range []string{"gateway", "settler", "riskctl", "bench", "migrate"} {
		if g[module+"/"+tc] == nil {
			t.Errorf("binary %s is not in the module any more: update the fences", tc)
		}
	}
	seen := map[string]bool{}
	for _, msg := range found {
		key := edgeOf(msg)
		seen[key] = true
		if !known[key] {
			t.Error(msg)
		}
	}
	for key := range known {
		if !seen[key] {
			t.Errorf("the known violation %q no longer happens: strike it from known", key)
		}
	}
}

// edgeOf is a violation's identity: its text up to the colon that ends the edge.
func edgeOf(msg string) string {
	if i := strings.Index(msg, ": "); i > 0 {
		return msg[:i]
	}
	return msg
}

func itoa(n int) string { return string(rune('0' + n)) }
