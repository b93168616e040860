package console

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func get(s *Server, uri string) *fasthttp.RequestCtx {
	ctx := &fasthttp.RequestCtx{}
	ctx.Request.Header.SetMethod("GET")
	ctx.Request.SetRequestURI(uri)
	s.Handler(ctx)
	return ctx
}

// The console's assets are served from the binary under a strict CSP; build inputs
// are not; the console's own script never parses data as HTML.
func TestAssets(t *testing.T) {
	assets, err := newAssets()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{assets: assets}
	for uri, want := range map[string]int{"/console/": 200, "/console/console.js": 200, "/console/vendor/uPlot.iife.min.js": 200,
		"/console/vendor/uPlot.min.css": 200, "/console/vendor/uPlot.LICENSE.txt": 200, "/console/README.md": 404, "/console/nope": 404} {
		ctx := get(s, uri)
		if ctx.Response.StatusCode() != want {
			t.Errorf("GET %s: %d, want %d", uri, ctx.Response.StatusCode(), want)
		}
		if want == 200 && !strings.Contains(string(ctx.Response.Header.Peek("Content-Security-Policy")), "script-src 'self'") {
			t.Errorf("GET %s: no strict CSP", uri)
		}
	}
	if ctx := get(s, "/console"); ctx.Response.StatusCode() != fasthttp.StatusMovedPermanently {
		t.Errorf("/console: %d, want a redirect to /console/", ctx.Response.StatusCode())
	}
	js := string(s.assets["console.js"].body)
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "localStorage", "location.search"} {
		if strings.Contains(js, bad) {
			t.Errorf("console.js uses %s (the token must stay in sessionStorage and headers; data as text)", bad)
		}
	}
}

// uPlot is pinned to an exact version, and the vendored build is that version's.
func TestUPlotPinned(t *testing.T) {
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, err := os.ReadFile("npm/package.json")
	if err == nil {
		err = json.Unmarshal(b, &pkg)
	}
	if err != nil {
		t.Fatal(err)
	}
	v := pkg.Dependencies["uplot"]
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(v) {
		t.Fatalf("uplot %q in npm/package.json: want an exact version", v)
	}
	lock, err := os.ReadFile("npm/package-lock.json")
	if err != nil || !strings.Contains(string(lock), `"node_modules/uplot": {`+"\n"+`      "version": "`+v+`"`) {
		t.Errorf("package-lock.json does not lock uplot %s (err %v)", v, err)
	}
	lic, err := webFS.ReadFile("web/vendor/uPlot.LICENSE.txt")
	if err != nil || !strings.Contains(string(lic), "MIT License") {
		t.Errorf("uPlot's license is not vendored: %v", err)
	}
}
