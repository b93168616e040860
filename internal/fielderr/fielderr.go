// Package fielderr is bad input named by its field: the error the admin and public APIs
// answer 400 with (which field, what was wrong; nothing was changed), and the strict JSON
// decoding their bodies go through. It is a leaf: the standard library only.
package fielderr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Error is bad input: which field and what was wrong with it.
type Error struct {
	Field, Msg string
}

func (e *Error) Error() string { return e.Field + ": " + e.Msg }

// New is an *Error for field with a formatted message.
func New(field, format string, args ...any) error {
	return &Error{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// DecodeStrict decodes exactly one JSON object from body into v, refusing unknown fields
// and trailing data. Its errors are *Error: a field of the wrong type names that field,
// an unknown field names it, anything else is the field "body".
func DecodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return &Error{Field: te.Field, Msg: "must be a " + te.Type.String()}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return &Error{Field: f, Msg: "unknown field"}
		}
		return &Error{Field: "body", Msg: "not a valid JSON object: " + err.Error()}
	}
	if dec.More() {
		return &Error{Field: "body", Msg: "unexpected data after the JSON object"}
	}
	return nil
}
