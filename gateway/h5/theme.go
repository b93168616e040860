package h5

import (
	"net/url"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/fielderr"
)

// Bounds of a page theme. They are the migration's CHECKs too (0007_campaign_pages).
const (
	MaxTitle     = 80
	MaxBannerURL = 512
	MaxRules     = 4000
)

// Theme is how one campaign's page looks for one partner ("" = the campaign's own).
// Everything in it is shown by the page as text (textContent) or used as a colour or an
// image address; nothing is ever markup.
type Theme struct {
	Partner   string `json:"partner"`
	Title     string `json:"title"`
	BannerURL string `json:"banner_url"`
	Colors    Colors `json:"colors"`
	RulesText string `json:"rules_text"`
}

// Colors are #rrggbb.
type Colors struct {
	Primary    string `json:"primary"`
	Background string `json:"background"`
	Text       string `json:"text"`
}

// DefaultColors are used where a campaign has no theme, and for colours a theme omits.
var DefaultColors = Colors{Primary: "#d0021b", Background: "#fff8f0", Text: "#1a1a1a"}

var colorRE = regexp.MustCompile(`^#[0-9a-fA-F]{6}$`)

// DecodeTheme reads and validates PUT /admin/v1/campaigns/{id}/page's body. Errors are
// *catalog.FieldError naming the field.
func DecodeTheme(body []byte) (*Theme, error) {
	var t Theme
	if err := fielderr.DecodeStrict(body, &t); err != nil {
		return nil, err
	}
	return &t, t.validate()
}

func (t *Theme) validate() error {
	fe := func(field, msg string) error { return &catalog.FieldError{Field: field, Msg: msg} }
	if t.Partner != "" && !catalog.ValidID(t.Partner) {
		return fe("partner", "must be 1-64 characters of [A-Za-z0-9._:-] (or empty for the campaign's own page)")
	}
	switch n := utf8.RuneCountInString(t.Title); {
	case strings.TrimSpace(t.Title) == "":
		return fe("title", "required")
	case n > MaxTitle:
		return fe("title", "at most 80 characters")
	case hasControl(t.Title, false):
		return fe("title", "must not contain control characters or line breaks")
	}
	if t.BannerURL != "" {
		if len(t.BannerURL) > MaxBannerURL {
			return fe("banner_url", "at most 512 bytes")
		}
		u, err := url.Parse(t.BannerURL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Opaque != "" ||
			strings.ContainsAny(t.BannerURL, " \t\r\n\"'<>\\`") {
			return fe("banner_url", "must be an https:// URL (no credentials, spaces or quotes)")
		}
	}
	for _, c := range []struct {
		name string
		v    *string
		def  string
	}{{"colors.primary", &t.Colors.Primary, DefaultColors.Primary}, {"colors.background", &t.Colors.Background, DefaultColors.Background}, {"colors.text", &t.Colors.Text, DefaultColors.Text}} {
		if *c.v == "" {
			*c.v = c.def
			continue
		}
		if !colorRE.MatchString(*c.v) {
			return fe(c.name, "must be a colour as #rrggbb")
		}
		*c.v = strings.ToLower(*c.v)
	}
	if utf8.RuneCountInString(t.RulesText) > MaxRules {
		return fe("rules_text", "at most 4000 characters")
	}
	if hasControl(t.RulesText, true) {
		return fe("rules_text", "must not contain control characters other than line breaks")
	}
	return nil
}

func hasControl(s string, newlines bool) bool {
	for _, r := range s {
		if newlines && r == '\n' {
			continue
		}
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return true
		}
	}
	return false
}
