package h5

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/testenv"
)

// newCampaign creates a business line and a campaign on the dev stack.
func newCampaign(t *testing.T, cat *catalog.Catalog) string {
	t.Helper()
	ctx := context.Background()
	bl, id := testenv.ID(t, "bl-h5"), testenv.ID(t, "cmp-h5")
	if err := cat.PutBusinessLine(ctx, bl, 100000); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"name":"Page test","business_line":%q,"starts_at":%q,"ends_at":%q,"per_user_limit":1,
		"budget":1000,"voucher_ttl":"24h","skus":[{"sku":"b","stock":5,"value":20},{"sku":"a","stock":5,"value":10}]}`,
		bl, time.Now().Add(time.Hour).Format(time.RFC3339), time.Now().Add(2*time.Hour).Format(time.RFC3339))
	cp, err := catalog.DecodeCampaign(id, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.PutCampaign(ctx, cp); err != nil {
		t.Fatal(err)
	}
	return id
}

func adminCall(s *Server, method, uri, body string) (int, map[string]any) {
	ctx := reqCtx(method, uri)
	ctx.Request.SetBodyString(body)
	parts := strings.Split(strings.TrimPrefix(strings.SplitN(uri, "?", 2)[0], "/admin/v1/"), "/")
	if !s.AdminRoute(ctx, parts) {
		return 0, nil
	}
	var v map[string]any
	_ = json.Unmarshal(ctx.Response.Body(), &v)
	return ctx.Response.StatusCode(), v
}

func pageConfig(t *testing.T, s *Server, campaign, partner string) (int, PageConfig) {
	t.Helper()
	uri := "/h5/" + campaign + "/config.json"
	if partner != "" {
		uri += "?partner=" + partner
	}
	ctx := reqCtx("GET", uri)
	s.Public(nil)(ctx)
	var pc PageConfig
	if ctx.Response.StatusCode() == 200 {
		if err := json.Unmarshal(ctx.Response.Body(), &pc); err != nil {
			t.Fatalf("config.json: %v: %s", err, ctx.Response.Body())
		}
	}
	return ctx.Response.StatusCode(), pc
}

// A campaign's page: the defaults without a theme, its own theme, a partner's theme for
// that partner only; a PUT is seen at once (the cache is dropped); unknown campaigns
// are 404 both ways; a bad theme changes nothing.
func TestThemeStoredAndServed(t *testing.T) {
	pg, rdb := testenv.PG(t), testenv.Redis(t)
	cat := catalog.New(pg, rdb)
	s, err := New(Config{ConfigTTL: time.Minute}, pg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := newCampaign(t, cat)

	status, pc := pageConfig(t, s, id, "")
	if status != 200 || pc.Page.Title != "Page test" || pc.Page.Colors != DefaultColors || len(pc.SKUs) != 2 || pc.SKUs[0].SKU != "a" {
		t.Fatalf("no theme: %d %+v", status, pc)
	}
	if code, v := adminCall(s, "PUT", "/admin/v1/campaigns/"+id+"/page",
		`{"title":"Own page","colors":{"primary":"#112233"},"rules_text":"r"}`); code != 200 {
		t.Fatalf("PUT own theme: %d %v", code, v)
	}
	if code, v := adminCall(s, "PUT", "/admin/v1/campaigns/"+id+"/page",
		`{"title":"Partner page","partner":"app-1","banner_url":"https://cdn.example.com/b.png"}`); code != 200 {
		t.Fatalf("PUT partner theme: %d %v", code, v)
	}
	// Within the (minute-long) cache: the PUT dropped it.
	if _, pc = pageConfig(t, s, id, ""); pc.Page.Title != "Own page" || pc.Page.Colors.Primary != "#112233" || pc.Page.Colors.Text != DefaultColors.Text {
		t.Errorf("own page after PUT: %+v", pc.Page)
	}
	if _, pc = pageConfig(t, s, id, "app-1"); pc.Page.Title != "Partner page" || pc.Page.BannerURL != "https://cdn.example.com/b.png" {
		t.Errorf("partner page: %+v", pc.Page)
	}
	if _, pc = pageConfig(t, s, id, "app-2"); pc.Page.Title != "Own page" {
		t.Errorf("another partner gets %+v, want the campaign's own page", pc.Page)
	}
	// A refused theme changes nothing.
	if code, v := adminCall(s, "PUT", "/admin/v1/campaigns/"+id+"/page", `{"title":"x","colors":{"text":"blue"}}`); code != 400 ||
		!strings.HasPrefix(fmt.Sprint(v["message"]), "colors.text:") {
		t.Errorf("bad colour: %d %v", code, v)
	}
	if code, v := adminCall(s, "GET", "/admin/v1/campaigns/"+id+"/page", ""); code != 200 || v["page"].(map[string]any)["title"] != "Own page" {
		t.Errorf("GET after a refused PUT: %d %v", code, v)
	}
	if code, _ := adminCall(s, "PUT", "/admin/v1/campaigns/"+testenv.ID(t, "nope")+"/page", `{"title":"x"}`); code != 404 {
		t.Errorf("PUT for an unknown campaign: %d, want 404", code)
	}
	if status, _ := pageConfig(t, s, testenv.ID(t, "nope"), ""); status != 404 {
		t.Errorf("config of an unknown campaign: %d, want 404", status)
	}
	if code, _ := adminCall(s, "DELETE", "/admin/v1/campaigns/"+id+"/page", ""); code != 405 {
		t.Errorf("DELETE: %d, want 405", code)
	}
	if code, _ := adminCall(s, "PUT", "/admin/v1/campaigns/"+id+"/other", ""); code != 0 {
		t.Errorf("another route was taken: %d", code)
	}

	// The page itself: CSP on, the same HTML for every campaign, assets by name.
	ctx := reqCtx("GET", "/h5/"+id)
	s.Public(nil)(ctx)
	if ctx.Response.StatusCode() != 200 || !strings.Contains(string(ctx.Response.Header.Peek("Content-Security-Policy")), "script-src 'self'") {
		t.Errorf("page: %d, CSP %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("Content-Security-Policy"))
	}
	for uri, want := range map[string]int{"/h5/~/app.js": 200, "/h5/~/app.css": 200, "/h5/~/index.html": 404, "/h5/~/nope.js": 404,
		"/h5/bad id!": 404, "/h5/" + id + "/nope": 404} {
		ctx := reqCtx("GET", uri)
		s.Public(nil)(ctx)
		if ctx.Response.StatusCode() != want {
			t.Errorf("GET %s: %d, want %d", uri, ctx.Response.StatusCode(), want)
		}
	}
	ctx = reqCtx("POST", "/h5/"+id)
	s.Public(nil)(ctx)
	if ctx.Response.StatusCode() != fasthttp.StatusMethodNotAllowed {
		t.Errorf("POST page: %d", ctx.Response.StatusCode())
	}
}

// No theme value can carry markup into the page's own HTML: the HTML is static and the
// theme reaches the page only as JSON (which encoding/json escapes < > &).
func TestThemeNeverInHTML(t *testing.T) {
	if strings.Contains(string(mustRead(t, "web/index.html")), "{{") {
		t.Fatal("index.html looks like a template")
	}
	b, _ := json.Marshal(Theme{Title: "</script><img src=x onerror=alert(1)>"})
	if strings.ContainsAny(string(b), "<>") {
		t.Errorf("theme JSON carries raw markup: %s", b)
	}
	js := string(mustRead(t, "web/app.js"))
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := webFS.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
