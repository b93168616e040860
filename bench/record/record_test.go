package record

import (
	"strings"
	"sync"
	"testing"
)

func TestWriteRead(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				w.Add(&Entry{ClaimID: "c.x" + string(rune('a'+i)), RequestID: "r", Campaign: "c", User: "u\"q", SKU: "s", Value: int64(j), Replayed: j%2 == 0})
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// A second writer appends: a ramp's steps share one record.
	w, err = Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	w.Add(&Entry{ClaimID: "c.last", RequestID: "r2", Campaign: "c", User: "u", SKU: "s", Value: 7})
	w.Add(&Entry{RequestID: "r3", Campaign: "c", User: "u3", SKU: "s", Status: 503})
	w.Add(&Entry{ClaimID: "c.won", RequestID: "r4", Campaign: "c", User: "u4", SKU: "iphone", Value: 1000, Result: ResultWon})
	w.Add(&Entry{DrawID: "c.none", RequestID: "r5", Campaign: "c", User: "u5", Result: ResultNoPrize})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 804 || got[800].ClaimID != "c.last" || got[800].Is503() || got[0].User != "u\"q" {
		t.Fatalf("read %d entries, last %+v, first %+v", len(got), got[len(got)-1], got[0])
	}
	if e := got[801]; !e.Is503() || e.RequestID != "r3" || e.ClaimID != "" || e.User != "u3" {
		t.Fatalf("503 entry read back as %+v", e)
	}
	if e := got[802]; e.IsNoPrize() || e.Draw() != "c.won" || e.ClaimID != "c.won" || e.Value != 1000 {
		t.Fatalf("won draw read back as %+v", e)
	}
	if e := got[803]; !e.IsNoPrize() || e.Draw() != "c.none" || e.ClaimID != "" || e.SKU != "" || e.RequestID != "r5" {
		t.Fatalf("no-prize draw read back as %+v", e)
	}
	if got[0].Draw() != "" {
		t.Fatalf("a voucher claim has draw %q", got[0].Draw())
	}
}

func TestDecodeErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"{\"claim_id\":\"a\",\"request_id\":\"b\"}\nnot json\n", "line 2"},
		{"{\"claim_id\":\"a\"}\n", "line 1: claim_id and request_id are required"},
		{"{\"request_id\":\"b\"}\n", "line 1: claim_id and request_id are required"},
		{"{\"request_id\":\"b\",\"status\":503,\"claim_id\":\"a\"}\n", "line 1: a 503 entry needs a request_id and no claim_id"},
		{"{\"status\":503}\n", "line 1: a 503 entry needs a request_id"},
		{"{\"claim_id\":\"a\",\"request_id\":\"b\",\"status\":409}\n", "line 1: status 409"},
		{"{\"draw_id\":\"a\",\"request_id\":\"b\",\"result\":\"lost\"}\n", "line 1: result \"lost\""},
		{"{\"request_id\":\"b\",\"result\":\"no_prize\"}\n", "line 1: a no_prize entry needs a draw_id"},
		{"{\"draw_id\":\"a\",\"claim_id\":\"a\",\"request_id\":\"b\",\"result\":\"no_prize\"}\n", "and no claim_id"},
		{"{\"draw_id\":\"a\",\"claim_id\":\"a\",\"request_id\":\"b\"}\n", "draw_id belongs to a no_prize entry only"},
		{"{\"request_id\":\"b\",\"status\":503,\"result\":\"no_prize\"}\n", "a 503 entry needs"},
	} {
		if _, err := Decode(strings.NewReader(tc.in), "x"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("{\"claim_id\":\"a\",\"request_id\":\"b\",\"value\":5}\n\n"))
	f.Add([]byte("{\"claim_id\":\"a\",\"request_id\":\"b\",\"replayed\":true}"))
	f.Add([]byte("{}"))
	f.Add([]byte("{\"request_id\":\"b\",\"status\":503}"))
	f.Add([]byte("{\"draw_id\":\"a\",\"request_id\":\"b\",\"result\":\"no_prize\"}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := Decode(strings.NewReader(string(b)), "fuzz")
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.RequestID == "" || (e.ClaimID == "") != (e.Is503() || e.IsNoPrize()) || (e.DrawID != "") != e.IsNoPrize() {
				t.Fatalf("decoded an entry without its ids: %+v", e)
			}
		}
	})
}
