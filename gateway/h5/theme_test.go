package h5

import (
	"errors"
	"strings"
	"testing"

	"github.com/flashgate/flashgate/internal/catalog"
)

// Bad themes are refused with the field named; hostile text is not refused (it is shown
// as text, which the browser test checks) but a hostile URL or colour is.
func TestDecodeTheme(t *testing.T) {
	for _, tc := range []struct{ body, field string }{
		{`{}`, "title"},
		{`{"title":"  "}`, "title"},
		{`{"title":"` + strings.Repeat("x", 81) + `"}`, "title"},
		{`{"title":"a\u0007b"}`, "title"},
		{`{"title":"a\nb"}`, "title"},
		{`{"title":"t","banner_url":"http://cdn.example.com/b.png"}`, "banner_url"},
		{`{"title":"t","banner_url":"javascript:alert(1)"}`, "banner_url"},
		{`{"title":"t","banner_url":"https://user:pw@cdn.example.com/b.png"}`, "banner_url"},
		{`{"title":"t","banner_url":"https://cdn.example.com/a\"onerror=\"x.png"}`, "banner_url"},
		{`{"title":"t","banner_url":"https:///nohost"}`, "banner_url"},
		{`{"title":"t","banner_url":"https://cdn.example.com/` + strings.Repeat("a", 512) + `"}`, "banner_url"},
		{`{"title":"t","colors":{"primary":"red"}}`, "colors.primary"},
		{`{"title":"t","colors":{"background":"#12345"}}`, "colors.background"},
		{`{"title":"t","colors":{"text":"#1234567"}}`, "colors.text"},
		{`{"title":"t","colors":{"text":"#12345g"}}`, "colors.text"},
		{`{"title":"t","colors":{"primary":"#123456;background:url(x)"}}`, "colors.primary"},
		{`{"title":"t","rules_text":"` + strings.Repeat("r", 4001) + `"}`, "rules_text"},
		{`{"title":"t","rules_text":"a\u0000b"}`, "rules_text"},
		{`{"title":"t","partner":"no spaces"}`, "partner"},
		{`{"title":"t","script":"x"}`, "script"},
		{`{"title":5}`, "title"},
		{`{"title":"t"} {}`, "body"},
		{`[`, "body"},
	} {
		_, err := DecodeTheme([]byte(tc.body))
		var fe *catalog.FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%s: err %v, want a field error on %s", tc.body, err, tc.field)
			continue
		}
		if fe.Field != tc.field {
			t.Errorf("%s: field %q (%v), want %q", tc.body, fe.Field, fe, tc.field)
		}
	}
	th, err := DecodeTheme([]byte(`{"title":"<img src=x onerror=alert(1)>","partner":"app-1",
		"banner_url":"https://cdn.example.com/b.png?x=1","colors":{"primary":"#AABBCC"},"rules_text":"1.\n2. </script>"}`))
	if err != nil {
		t.Fatal(err)
	}
	if th.Colors.Primary != "#aabbcc" || th.Colors.Background != DefaultColors.Background || th.Colors.Text != DefaultColors.Text {
		t.Errorf("colours %+v: want #aabbcc and the defaults", th.Colors)
	}
}

func TestParseOrigins(t *testing.T) {
	got, err := ParseOrigins(" https://app.example.com, http://127.0.0.1:3000 ,")
	if err != nil || len(got) != 2 || got[1] != "http://127.0.0.1:3000" {
		t.Fatalf("got %v %v", got, err)
	}
	for _, bad := range []string{"*", "app.example.com", "https://app.example.com/path", "ftp://x", "https://*.example.com"} {
		if _, err := ParseOrigins(bad); err == nil || !strings.Contains(err.Error(), "FLASH_CORS_ORIGINS") {
			t.Errorf("%q: err %v, want one naming FLASH_CORS_ORIGINS", bad, err)
		}
	}
}
