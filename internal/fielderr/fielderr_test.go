package fielderr

import (
	"errors"
	"testing"
)

func TestDecodeStrict(t *testing.T) {
	type body struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	}
	var ok body
	if err := DecodeStrict([]byte(`{"name":"a","count":2}`), &ok); err != nil || ok.Name != "a" || ok.Count != 2 {
		t.Fatalf("a good body: %+v, %v", ok, err)
	}
	for _, tc := range []struct{ in, field, msg string }{
		{`{"count":"two"}`, "count", "must be a int"},
		{`{"name":"a","colour":"red"}`, "colour", "unknown field"},
		{`{"name":"a"} {"name":"b"}`, "body", "unexpected data after the JSON object"},
		{`{"name":`, "body", "not a valid JSON object: unexpected EOF"},
		{`[1,2]`, "body", "not a valid JSON object: json: cannot unmarshal array into Go value of type fielderr.body"},
	} {
		var b body
		err := DecodeStrict([]byte(tc.in), &b)
		var fe *Error
		if !errors.As(err, &fe) || fe.Field != tc.field || fe.Msg != tc.msg {
			t.Errorf("%s: got %v, want %s: %s", tc.in, err, tc.field, tc.msg)
		}
	}
}
