package clerk_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/clerksync/clerksync/internal/clerk"
	"github.com/clerksync/clerksync/internal/event"
)

// referenceParseEnvelope is ParseEnvelope as it was before its one-pass scanner: encoding/json
// decodes the body, then data. It defines what ParseEnvelope must accept and refuse.
func referenceParseEnvelope(body []byte) (clerk.Envelope, error) {
	var raw struct {
		Type      *string         `json:"type"`
		Data      json.RawMessage `json:"data"`
		Timestamp json.RawMessage `json:"timestamp"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return clerk.Envelope{}, clerk.ErrMalformed
	}
	if raw.Type == nil || len(raw.Data) == 0 || raw.Data[0] != '{' {
		return clerk.Envelope{}, clerk.ErrMalformed
	}
	env := clerk.Envelope{Type: *raw.Type}
	if !event.ValidType(env.Type) {
		return clerk.Envelope{}, clerk.ErrInvalidType
	}
	var d struct {
		ID json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(raw.Data, &d); err != nil {
		return clerk.Envelope{}, clerk.ErrMalformed
	}
	if len(d.ID) > 0 && d.ID[0] == '"' {
		if err := json.Unmarshal(d.ID, &env.DataID); err != nil {
			env.DataID = ""
		}
	}
	if env.DataID == "" && strings.HasPrefix(env.Type, "user.") {
		return clerk.Envelope{}, clerk.ErrMalformed
	}
	return env, nil
}

// sameAsReference fails t when ParseEnvelope and the reference disagree on body: on the
// envelope, or on the error's class.
func sameAsReference(t *testing.T, body []byte) {
	t.Helper()
	want, wantErr := referenceParseEnvelope(body)
	got, err := clerk.ParseEnvelope(body)
	if errClass(err) != errClass(wantErr) {
		t.Fatalf("ParseEnvelope(%q): error %v, the reference's %v", body, err, wantErr)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("ParseEnvelope(%q) (-reference +got)\n%s", body, diff)
	}
}

func errClass(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errors.Is(err, clerk.ErrMalformed):
		return "ErrMalformed"
	case errors.Is(err, clerk.ErrInvalidType):
		return "ErrInvalidType"
	}
	return fmt.Sprintf("unexpected (%v)", err)
}

// envelopeEdgeCases are bodies where a hand-written JSON scanner could part from encoding/json.
func envelopeEdgeCases() []string {
	deep := func(n int, open, close string) string {
		return `{"type":"a.b","data":{},"x":` + strings.Repeat(open, n-1) + strings.Repeat(close, n-1) + `}`
	}
	return []string{
		``, ` `, `{`, `}`, `{}`, `null`, `true`, `"x"`, `1`, `[]`, `[{"type":"a.b","data":{}}]`,
		`{"type":"a.b","data":{}}`,
		" \t\r\n{\"type\" : \"a.b\" ,\n\"data\":\t{ } }\r\n ",
		"\v{\"type\":\"a.b\",\"data\":{}}",
		"\ufeff{\"type\":\"a.b\",\"data\":{}}",
		`{"type":"a.b","data":{}} x`, `{"type":"a.b","data":{}}{}`, `{"type":"a.b","data":{}},`,
		`{"type":"a.b","data":{},}`, `{,"type":"a.b","data":{}}`, `{"type":"a.b""data":{}}`,
		`{"type":"a.b","data":{}`, `{"type" "a.b","data":{}}`, `{type:"a.b","data":{}}`,
		`{'type':'a.b','data':{}}`,
		// Keys: case, escapes, non-ASCII look-alikes.
		`{"TYPE":"a.b","Data":{"ID":"u"}}`, `{"tYpE":"user.created","dAtA":{"iD":"u"}}`,
		`{"\u0074ype":"user.created","d\u0061ta":{"\u0069d":"u"}}`, `{"\u0054YPE":"a.b","data":{}}`,
		`{"type\u0000":"a.b","data":{}}`, `{"typ":"a.b","data":{}}`, `{"types":"a.b","data":{}}`,
		`{"ｔｙｐｅ":"a.b","data":{}}`, `{"type":"a.b","data":{},"\ud800":1}`, "{\"ty\xffpe\":1,\"type\":\"a.b\",\"data\":{}}",
		`{"type":"a.b","data":{"I\u0044":"x"}}`, `{"type":"user.x","data":{"ıd":"x"}}`,
		// Repeated keys: the last wins, but a type of the wrong kind is refused anywhere.
		`{"type":"user.created","data":{"id":"u"},"type":"a.b"}`,
		`{"type":"a.b","data":{},"type":null}`, `{"type":null,"type":"a.b","data":{}}`,
		`{"type":1,"type":"a.b","data":{}}`, `{"type":"a.b","type":{},"data":{}}`, `{"type":[],"type":"a.b","data":{}}`,
		`{"type":true,"data":{}}`, `{"type":false,"data":{}}`, `{"type":nul,"data":{}}`, `{"type":nullx,"data":{}}`,
		`{"type":"user.created","data":{"id":"u"},"data":{}}`, `{"type":"user.created","data":{},"data":{"id":"u"}}`,
		`{"type":"user.created","data":{"id":"u"},"data":null}`, `{"type":"a.b","data":5,"data":{}}`,
		`{"type":"a.b","data":{},"data":[]}`, `{"type":"a.b","data":{},"DATA":"x"}`,
		`{"type":"user.created","data":{"id":"u","id":7}}`, `{"type":"user.created","data":{"id":7,"id":"u"}}`,
		`{"type":"user.created","data":{"id":"u","id":null}}`, `{"type":"user.created","data":{"id":"","Id":"v"}}`,
		`{"type":"user.created","data":{"x":{"id":"u"}}}`, `{"type":"user.created","data":{"id":["u"]}}`,
		`{"type":"user.created","id":"u","data":{}}`,
		// Strings: escapes, control bytes, invalid UTF-8, surrogates.
		`{"type":"user.created","data":{"id":"u\"1"}}`, `{"type":"user.created","data":{"id":"\u0000"}}`,
		`{"type":"user.created","data":{"id":"\ud800"}}`, `{"type":"user.created","data":{"id":"\ud83d\ude00"}}`,
		"{\"type\":\"user.created\",\"data\":{\"id\":\"\xff\xfe\"}}", "{\"type\":\"user.created\",\"data\":{\"id\":\"é\"}}",
		"{\"type\":\"user.created\",\"data\":{\"id\":\"a\tb\"}}", "{\"type\":\"user.created\",\"data\":{\"id\":\"a\x7fb\"}}",
		"{\"type\":\"user.created\",\"data\":{\"id\":\"a\x1fb\"}}", "{\"type\":\"a.b\xff\",\"data\":{}}",
		`{"type":"a\u002eb","data":{}}`, `{"type":"a.b\u0000","data":{}}`, `{"type":"a.b\","data":{}}`,
		`{"type":"a.b","data":{},"x":"\x"}`, `{"type":"a.b","data":{},"x":"\u12"}`, `{"type":"a.b","data":{},"x":"\u12G4"}`,
		`{"type":"a.b","data":{},"x":"\/\b\f\n\r\t\\\""}`, `{"type":"a.b","data":{},"x":"\U0041"}`, `{"type":"a.b","data":{},"x":"\`,
		`{"type":"a.b","data":{},"x":"\u`, `{"type":"a.b","data":{},"x":"\u004`, `{"type":"a.b","data":{},"x":"`,
		`{"type":"` + strings.Repeat("a", 300) + `.b","data":{}}`,
		// Numbers and literals.
		`{"type":"a.b","data":{},"n":0}`, `{"type":"a.b","data":{},"n":-0}`, `{"type":"a.b","data":{},"n":01}`,
		`{"type":"a.b","data":{},"n":-}`, `{"type":"a.b","data":{},"n":1.}`, `{"type":"a.b","data":{},"n":.5}`,
		`{"type":"a.b","data":{},"n":+1}`, `{"type":"a.b","data":{},"n":1e}`, `{"type":"a.b","data":{},"n":1e+}`,
		`{"type":"a.b","data":{},"n":1E-7}`, `{"type":"a.b","data":{},"n":-12.5e+300}`, `{"type":"a.b","data":{},"n":1e999999}`,
		`{"type":"a.b","data":{},"n":0x10}`, `{"type":"a.b","data":{},"n":NaN}`, `{"type":"a.b","data":{},"n":Infinity}`,
		`{"type":"a.b","data":{},"n":1 2}`, `{"type":"a.b","data":{},"n":[1,2,]}`, `{"type":"a.b","data":{},"n":[,1]}`,
		`{"type":"a.b","data":{},"n":[1 2]}`, `{"type":"a.b","data":{},"n":[[],{},"",0,true,false,null]}`,
		`{"type":"a.b","data":{},"n":tru}`, `{"type":"a.b","data":{},"n":True}`, `{"type":"a.b","data":{},"n":falsey}`,
		`{"type":"a.b","data":{},"n":{"a":1,"a":{"b":[{}]}}}`, `{"type":"a.b","data":{},"n":{"a"}}`, `{"type":"a.b","data":{},"n":{1:2}}`,
		`{"type":"a.b","data":{"id":1.5e3,"x":[{"id":"u"}]}}`,
		// Nesting: encoding/json allows 10000 levels, the envelope's object included.
		deep(10000, "[", "]"), deep(10001, "[", "]"), deep(10000, `{"a":`, "}"), deep(10001, `{"a":`, "}"),
		`{"type":"a.b","data":{"x":` + strings.Repeat("[", 9998) + strings.Repeat("]", 9998) + `}}`,
		`{"type":"a.b","data":{"x":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}}`,
		`{"type":"a.b","data":{},"x":` + strings.Repeat("[", 20000),
	}
}

func TestParseEnvelopeMatchesReference(t *testing.T) {
	t.Parallel()
	for _, body := range envelopeEdgeCases() {
		sameAsReference(t, []byte(body))
	}
}

// TestParseEnvelopeMutations compares ParseEnvelope with the reference on random edits of
// well-formed envelopes: bytes changed, inserted, deleted and repeated, keys re-cased and
// escaped. The seed is logged, so a failure replays.
func TestParseEnvelopeMutations(t *testing.T) {
	t.Parallel()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	seeds := []string{string(fixture(t, "user.created.json")), string(fixture(t, "user.updated.json")), string(fixture(t, "user.deleted.json"))}
	for _, body := range envelopeEdgeCases() {
		if len(body) < 1000 { // not the deep ones: an edit would rarely land where it matters
			seeds = append(seeds, body)
		}
	}
	alphabet := []byte("{}[]:,\" \t\\/u0123456789abefnrtlsxyIDdpTE.-+eE\x00\x1f\x7f\xff")
	tokens := []string{`"type"`, `"data"`, `"id"`, `"Type"`, `"\u0074ype"`, `"ID"`, `null`, `{}`, `[]`, `"user.created"`, `"a.b"`, `"u"`, `,`, `:`, `1`, `-0.5e3`, `\u00`, `"\ud800"`}
	for range 20000 {
		body := []byte(seeds[r.IntN(len(seeds))])
		for range 1 + r.IntN(4) {
			at := 0
			if len(body) > 0 {
				at = r.IntN(len(body))
			}
			switch r.IntN(5) {
			case 0:
				if len(body) > 0 {
					body[at] = alphabet[r.IntN(len(alphabet))]
				}
			case 1:
				body = append(body[:at:at], append([]byte{alphabet[r.IntN(len(alphabet))]}, body[at:]...)...)
			case 2:
				if len(body) > 0 {
					body = append(body[:at:at], body[at+1:]...)
				}
			case 3:
				body = append(body[:at:at], append([]byte(tokens[r.IntN(len(tokens))]), body[at:]...)...)
			case 4:
				end := min(len(body), at+1+r.IntN(40))
				body = append(body[:end:end], body[at:]...)
			}
		}
		sameAsReference(t, body)
	}
}

// FuzzParseEnvelopeReference is the differential fuzz target: ParseEnvelope against the
// encoding/json reference.
func FuzzParseEnvelopeReference(f *testing.F) {
	for _, name := range []string{"user.created.json", "user.updated.json", "user.deleted.json"} {
		f.Add(fixture(f, name))
	}
	for _, body := range envelopeEdgeCases() {
		if len(body) < 1000 {
			f.Add([]byte(body))
		}
	}
	f.Fuzz(sameAsReference)
}
