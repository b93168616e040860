package api

import (
	"encoding/json"
	"testing"
	"time"
)

// The GET body of a no-prize draw is the POST's no-prize body (appendNoPrize) plus its
// state and drawn_at, valid JSON whatever the ids hold.
func TestAppendDraw(t *testing.T) {
	at := time.Date(2026, 12, 4, 21, 0, 0, 123e6, time.FixedZone("CST", 8*3600))
	for _, tc := range []struct {
		d    Draw
		want string
	}{
		{Draw{DrawID: "lot.0123456789abcdefghijklmnop", CampaignID: "lot", UserID: "u-1", State: "pending", DrawnAt: at},
			`{"result":"no_prize","draw_id":"lot.0123456789abcdefghijklmnop","campaign_id":"lot","user_id":"u-1","state":"pending","drawn_at":"2026-12-04T13:00:00.123Z"}`},
		{Draw{DrawID: "lot.x", CampaignID: "lot", UserID: `p:"a"`, State: "settled"},
			`{"result":"no_prize","draw_id":"lot.x","campaign_id":"lot","user_id":"p:\"a\"","state":"settled"}`},
	} {
		got := string(appendDraw(nil, &tc.d))
		if got != tc.want {
			t.Errorf("appendDraw(%+v)\n got %s\nwant %s", tc.d, got, tc.want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("appendDraw(%+v) = %s: not JSON", tc.d, got)
		}
		post := string(appendNoPrize(nil, tc.d.DrawID, tc.d.CampaignID, tc.d.UserID))
		if got[:len(post)-1] != post[:len(post)-1] {
			t.Errorf("GET body %s does not begin with the POST's fields %s", got, post)
		}
	}
}
