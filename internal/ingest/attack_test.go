package ingest

// The attack table: hostile webhooks beyond the contract rows of TestStatuses. Every refused
// request is checked for its status and JSON code and for leaving the stream as it was; every
// fixture's cleanup (setup's, made stricter by hostile) fails the test when the logs hold a
// secret, its base64 key, a signature sent or a body sent.

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/event/eventtest"
	"github.com/clerksync/clerksync/internal/service"
)

// hostile is setup for an attack: besides the whsec_ secrets setup already looks for, the logs
// must not hold their base64 key either.
func hostile(t testing.TB, opts ...func(*options)) *fixture {
	t.Helper()
	f := setup(t, opts...)
	for _, s := range f.opts.secrets {
		f.remember(strings.TrimPrefix(s, secretPrefix))
	}
	return f
}

// setSignature replaces the request's signature header with sig, and notes it, each of its
// entries and each entry's value as things the logs must never hold.
func setSignature(f *fixture, r *http.Request, sig string) {
	r.Header.Set("Svix-Signature", sig)
	f.remember(sig)
	for _, entry := range strings.Fields(sig) {
		f.remember(entry)
		if _, v, ok := strings.Cut(entry, ","); ok {
			f.remember(v)
		}
	}
}

// setBody replaces the request's body with body, sent with a Content-Length, and notes it as
// something the logs must never hold. GetBody follows, so a retry on a fresh connection sends the
// same bytes.
func setBody(f *fixture, r *http.Request, body []byte) {
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.Body, _ = r.GetBody()
	r.ContentLength = int64(len(body))
	f.remember(string(body))
}

// serveDirect serves r through the handler itself, without a connection: for bytes net/http
// refuses to send or receive (a NUL or CR in a header), which a proxy in front of ingest might
// still pass on, and to control exactly what the handler reads.
func serveDirect(t testing.TB, h http.Handler, r *http.Request) answer {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return decode(t, rec.Code, rec.Header(), rec.Body.Bytes())
}

// attack is a hostile request and the refusal it must get.
type attack struct {
	name    string
	request func(*testing.T, *fixture) *http.Request
	// direct serves the request through the handler, not over a connection (see serveDirect).
	direct bool
	status int
	code   string
}

// refuseAll runs each attack on a fresh fixture: the answer is the row's status and code, and
// the stream holds what it held before.
func refuseAll(t *testing.T, attacks []attack) {
	t.Helper()
	for _, tt := range attacks {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := hostile(t)
			req := tt.request(t, f)
			before := f.msgs(t)
			var got answer
			if tt.direct {
				got = serveDirect(t, f.handler, req)
			} else {
				got = send(t, req)
			}
			if got.status != tt.status || got.code != tt.code {
				t.Errorf("answer %d %q, want %d %q", got.status, got.code, tt.status, tt.code)
			}
			if added := f.msgs(t) - before; added != 0 {
				t.Errorf("stream grew by %d messages, want 0", added)
			}
		})
	}
}

// tampered is a valid webhook of body, signed at the fixture's clock, that change then alters.
func tampered(body []byte, change func(t *testing.T, f *fixture, r *http.Request)) func(*testing.T, *fixture) *http.Request {
	return func(t *testing.T, f *fixture) *http.Request {
		t.Helper()
		r := f.request(t, routeWebhooks, body)
		change(t, f, r)
		return r
	}
}

// TestForgedWebhooks: bodies changed after signing, and signature headers that are not the
// signature, each refused 401 invalid_signature.
func TestForgedWebhooks(t *testing.T) {
	t.Parallel()
	created := readFile(t, "user.created.json")
	compact := compactJSON(t, created)
	var tabbed bytes.Buffer
	if err := json.Indent(&tabbed, compact, "", "\t"); err != nil {
		t.Fatal(err)
	}
	indented := append(tabbed.Bytes(), '\n')

	// signedAs signs signed and sends sent.
	signedAs := func(signed, sent []byte) func(*testing.T, *fixture) *http.Request {
		return tampered(signed, func(t *testing.T, f *fixture, r *http.Request) {
			t.Helper()
			if bytes.Equal(signed, sent) {
				t.Fatal("the body sent is the body signed")
			}
			setBody(f, r, sent)
		})
	}
	// resent signs created and sends alter(created).
	resent := func(alter func([]byte) []byte) func(*testing.T, *fixture) *http.Request {
		return func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			return signedAs(created, alter(bytes.Clone(created)))(t, f)
		}
	}
	flip := func(i func(n int) int) func([]byte) []byte {
		return func(b []byte) []byte { b[i(len(b))] ^= 0x01; return b }
	}
	// withSig replaces the valid signature header by what sig makes of it.
	withSig := func(sig func(t *testing.T, valid string) string) func(*testing.T, *fixture) *http.Request {
		return tampered(created, func(t *testing.T, f *fixture, r *http.Request) {
			t.Helper()
			setSignature(f, r, sig(t, r.Header.Get("Svix-Signature")))
		})
	}
	bogus := "v1," + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
	value := func(valid string) string { return strings.TrimPrefix(valid, "v1,") }

	tests := []attack{
		// The raw bytes are what is signed: the same JSON, written otherwise, is not.
		{name: "body re-serialised compact", request: resent(func([]byte) []byte { return compact })},
		{name: "body re-serialised with tabs", request: resent(func([]byte) []byte { return indented })},
		{name: "body re-serialised with keys reordered", request: func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			return signedAs(compact, reorderedJSON(t, compact))(t, f)
		}},
		{name: "first byte flipped", request: resent(flip(func(int) int { return 0 }))},
		{name: "middle byte flipped", request: resent(flip(func(n int) int { return n / 2 }))},
		{name: "last byte flipped", request: resent(flip(func(n int) int { return n - 1 }))},
		{name: "trailing newline added", request: resent(func(b []byte) []byte { return append(b, '\n') })},
		{name: "trailing CRLF added", request: resent(func(b []byte) []byte { return append(b, '\r', '\n') })},
		{name: "trailing NUL added", request: resent(func(b []byte) []byte { return append(b, 0) })},
		{name: "UTF-8 BOM prepended", request: resent(func(b []byte) []byte { return append([]byte("\ufeff"), b...) })},
		{name: "last byte dropped", request: resent(func(b []byte) []byte { return b[:len(b)-1] })},
		{name: "body sent twice", request: resent(func(b []byte) []byte { return append(b, b...) })},

		// Signatures that are not the signature. ("v2," alone is TestStatuses' and
		// TestSeveralSignatures'.)
		{name: "v1, with an empty signature", request: withSig(func(*testing.T, string) string { return "v1," })},
		{name: "v1, empty beside another empty", request: withSig(func(*testing.T, string) string { return "v1, v1," })},
		{name: "signature truncated by one character", request: withSig(func(_ *testing.T, valid string) string { return valid[:len(valid)-1] })},
		{name: "signature truncated to half", request: withSig(func(_ *testing.T, valid string) string { return valid[:len(valid)/2] })},
		{name: "signature without its base64 padding", request: withSig(func(t *testing.T, valid string) string {
			t.Helper()
			if !strings.HasSuffix(valid, "=") {
				t.Fatalf("signature %q has no padding", valid)
			}
			return strings.TrimRight(valid, "=")
		})},
		{name: "signature with extra padding", request: withSig(func(_ *testing.T, valid string) string { return valid + "=" })},
		{name: "signature in the base64url alphabet", request: urlAlphabet(created, base64.URLEncoding)},
		{name: "signature in unpadded base64url", request: urlAlphabet(created, base64.RawURLEncoding)},
		{name: "signature in hex", request: withSig(func(t *testing.T, valid string) string {
			t.Helper()
			raw, err := base64.StdEncoding.DecodeString(value(valid))
			if err != nil {
				t.Fatal(err)
			}
			return "v1," + hex.EncodeToString(raw)
		})},
		{name: "signature unversioned", request: withSig(func(_ *testing.T, valid string) string { return value(valid) })},
		{name: "version in capitals", request: withSig(func(_ *testing.T, valid string) string { return "V1," + value(valid) })},
		{name: "version with = instead of ,", request: withSig(func(_ *testing.T, valid string) string { return "v1=" + value(valid) })},
		{name: "version twice", request: withSig(func(_ *testing.T, valid string) string { return "v1," + valid })},
		{name: "the secret's key as the signature", request: withSig(func(*testing.T, string) string {
			return "v1," + strings.TrimPrefix(testSecret, secretPrefix)
		})},
		// Svix separates signatures with a space (0x20) and nothing else: the valid one, behind
		// another separator, is not a signature of its own.
		{name: "U+00A0 between signatures, valid last", request: withSig(func(_ *testing.T, valid string) string { return bogus + "\u00a0" + valid })},
		{name: "U+00A0 between signatures, valid first", request: withSig(func(_ *testing.T, valid string) string { return valid + "\u00a0" + bogus })},
		{name: "U+00A0 after the only signature", request: withSig(func(_ *testing.T, valid string) string { return valid + "\u00a0" })},
		{name: "Latin-1 0xA0 byte between signatures", request: withSig(func(_ *testing.T, valid string) string { return bogus + "\xa0" + valid })},
		{name: "tab between signatures", request: withSig(func(_ *testing.T, valid string) string { return bogus + "\t" + valid })},
		{name: "U+3000 between signatures", request: withSig(func(_ *testing.T, valid string) string { return bogus + "\u3000" + valid })},
	}
	for i := range tests {
		tests[i].status, tests[i].code = http.StatusUnauthorized, "invalid_signature"
	}
	refuseAll(t, tests)
}

// urlAlphabet is a webhook whose valid signature holds a + or /, sent re-encoded with enc. The
// fixture's clock is fixed, so the id found is the same on every run.
func urlAlphabet(body []byte, enc *base64.Encoding) func(*testing.T, *fixture) *http.Request {
	return func(t *testing.T, f *fixture) *http.Request {
		t.Helper()
		for i := range 100 {
			id := "msg_url_" + strconv.Itoa(i)
			valid := signature(t, testSecret, id, f.opts.now, body)
			if !strings.ContainsAny(valid, "+/") {
				continue
			}
			raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(valid, "v1,"))
			if err != nil {
				t.Fatal(err)
			}
			r := f.signedRequest(t, routeWebhooks, testSecret, id, f.opts.now, body)
			setSignature(f, r, "v1,"+enc.EncodeToString(raw))
			return r
		}
		t.Fatal("no signature with a + or / among 100 ids")
		return nil
	}
}

func compactJSON(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(out.Bytes(), b) {
		t.Fatal("compacting changed nothing")
	}
	return out.Bytes()
}

// reorderedJSON writes the compact object b with its top-level keys in reverse order, values as
// they were: only the key order differs.
func reorderedJSON(t *testing.T, b []byte) []byte {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(maps.Keys(obj))
	slices.Reverse(keys)
	out := []byte{'{'}
	for _, k := range keys {
		if len(out) > 1 {
			out = append(out, ',')
		}
		key, _ := json.Marshal(k)
		out = append(append(append(out, key...), ':'), obj[k]...)
	}
	out = append(out, '}')
	if len(out) != len(b) || bytes.Equal(out, b) {
		t.Fatalf("reordering made %q of %q", out, b)
	}
	return out
}

// TestHostileTimestamps: a timestamp that is not an integer is 400 invalid_headers; an integer,
// however far off, is a timestamp outside the tolerance, 401 invalid_signature (the contract's
// two rows). Neither reaches the stream.
func TestHostileTimestamps(t *testing.T) {
	t.Parallel()
	created := readFile(t, "user.created.json")
	now := strconv.FormatInt(testNow.Unix(), 10)
	// stamped is a valid webhook whose timestamp header is then set to ts.
	stamped := func(ts string) func(*testing.T, *fixture) *http.Request {
		return tampered(created, func(_ *testing.T, _ *fixture, r *http.Request) { r.Header.Set("Svix-Timestamp", ts) })
	}
	// signedAt is a webhook signed, as Svix would, at the integer second ts.
	signedAt := func(ts int64) func(*testing.T, *fixture) *http.Request {
		return func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			r := f.signedRequest(t, routeWebhooks, testSecret, newID(), time.Unix(ts, 0), created)
			if got, want := r.Header.Get("Svix-Timestamp"), strconv.FormatInt(ts, 10); got != want {
				t.Fatalf("signed at %q, want %q", got, want)
			}
			return r
		}
	}
	invalid := func(name, ts string) attack {
		return attack{name: name, request: stamped(ts), status: http.StatusBadRequest, code: "invalid_headers"}
	}
	tests := []attack{
		invalid("30 digits", strings.Repeat("9", 30)),
		invalid("below int64", "-9223372036854775809"),
		invalid("float with an exponent", "1.767323045e9"),
		invalid("float, now.0", now+".0"),
		invalid("hexadecimal", "0x"+strconv.FormatInt(testNow.Unix(), 16)),
		invalid("with underscores", now[:1]+"_"+now[1:]),
		invalid("with a thousands separator", now[:1]+","+now[1:]),
		invalid("two timestamps", now+" "+now),
		invalid("Arabic-Indic digits", strings.Map(func(r rune) rune { return r - '0' + '\u0660' }, now)),
		invalid("full-width digits", strings.Map(func(r rune) rune { return r - '0' + '\uff10' }, now)),
		invalid("a sign alone", "-"),
		invalid("two signs", "+-"+now),
		invalid("NaN", "NaN"),
		invalid("Infinity", "Infinity"),
		invalid("RFC 3339", testNow.Format(time.RFC3339)),
		invalid("milliseconds as a float", strconv.FormatFloat(float64(testNow.UnixMilli())/1000, 'f', 3, 64)),
		{name: "with a NUL", request: stamped(now + "\x00"), direct: true, status: http.StatusBadRequest, code: "invalid_headers"},

		// Integers: timestamps, far outside the tolerance.
		{name: "negative, signed as such", request: signedAt(-1), status: http.StatusUnauthorized, code: "invalid_signature"},
		{name: "minus now, signed as such", request: signedAt(-testNow.Unix()), status: http.StatusUnauthorized, code: "invalid_signature"},
		{name: "minus zero", request: stamped("-0"), status: http.StatusUnauthorized, code: "invalid_signature"},
		{name: "int64 max, signed as such", request: signedAt(math.MaxInt64), status: http.StatusUnauthorized, code: "invalid_signature"},
		{name: "int64 min, signed as such", request: signedAt(math.MinInt64), status: http.StatusUnauthorized, code: "invalid_signature"},
		{name: "milliseconds, signed as such", request: signedAt(testNow.UnixMilli()), status: http.StatusUnauthorized, code: "invalid_signature"},
	}
	refuseAll(t, tests)
}

// TestHostileIDs: a svix-id becomes the Nats-Msg-Id, a NATS header. Printable ASCII of 1–255
// bytes, NATS subject wildcards and path tricks included, is stored with that exact id (and
// deduplicated on it); anything else is refused 400 invalid_headers, by ingest or, for the bytes
// HTTP/1.1 itself forbids, by net/http before ingest sees them.
func TestHostileIDs(t *testing.T) {
	t.Parallel()
	created := readFile(t, "user.created.json")
	stored := []string{
		"*",
		">",
		"clerk.>",
		"msg.*.>",
		"a",
		"msg 1",
		"msg  1",
		"../../../etc/passwd",
		"..",
		"/",
		":",
		"Nats-Msg-Id: forged",
		`msg_"'\<>{}%$&;|` + "`",
		"msg_%00%0d%0a",
		`msg_\r\n\u0000`,
		strings.Repeat("*> ./", maxIDLen/5), // 255 bytes
	}
	for _, id := range stored {
		t.Run(fmt.Sprintf("stored %.40q", id), func(t *testing.T) {
			t.Parallel()
			f := hostile(t)
			req := f.signedRequest(t, routeWebhooks, testSecret, id, f.opts.now, created)
			again := req.Clone(t.Context())
			setBody(f, again, created)
			if got := send(t, req); got.status != http.StatusOK || got.ack != (ack{ID: id}) {
				t.Fatalf("answer %+v, want 200 for %q", got, id)
			}
			m := f.stored(t, 1)
			for _, h := range []string{event.HeaderMsgID, event.HeaderSvixID} {
				if got := m.Header.Values(h); len(got) != 1 || got[0] != id {
					t.Errorf("stored %s %q, want exactly %q", h, got, id)
				}
			}
			if m.Subject != "clerk.user.created" {
				t.Errorf("subject %q, want clerk.user.created", m.Subject)
			}
			// JetStream deduplicates on exactly this id, wildcards and all.
			if got := send(t, again); got.status != http.StatusOK || got.ack != (ack{ID: id, Duplicate: true}) {
				t.Errorf("second delivery: answer %+v, want 200 duplicate", got)
			}
			if n := f.msgs(t); n != 1 {
				t.Errorf("stream holds %d messages, want 1", n)
			}
		})
	}

	withID := func(id string) func(*testing.T, *fixture) *http.Request {
		return func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			return f.signedRequest(t, routeWebhooks, testSecret, id, f.opts.now, created)
		}
	}
	refused := []attack{
		{name: "256 bytes of wildcards", request: withID(strings.Repeat(">", maxIDLen+1))},
		{name: "é", request: withID("msg_\u00e9")},
		{name: "an emoji", request: withID("msg_\U0001f600")},
		{name: "U+00A0 inside", request: withID("msg\u00a01")},
		{name: "U+2028 line separator", request: withID("msg\u20281")},
		{name: "U+202E right-to-left override", request: withID("msg_\u202e1")},
		{name: "NUL", request: withID("msg_\x00"), direct: true},
		{name: "CR", request: withID("msg_\r1"), direct: true},
		{name: "LF", request: withID("msg_\n1"), direct: true},
		{name: "CRLF and a forged NATS header", request: withID("msg_1\r\nNats-Msg-Id: forged"), direct: true},
		{name: "DEL", request: withID("msg_\x7f"), direct: true},
		{name: "ANSI escape", request: withID("\x1b[31mmsg"), direct: true},
		{name: "leading space", request: withID(" msg_1"), direct: true},
		{name: "trailing space", request: withID("msg_1 "), direct: true},
		{name: "a space alone", request: withID(" "), direct: true},
	}
	for i := range refused {
		refused[i].name = "refused: " + refused[i].name
		refused[i].status, refused[i].code = http.StatusBadRequest, "invalid_headers"
	}
	refuseAll(t, refused)

	// Over the wire, net/http refuses a NUL or a CR in a header itself, before ingest: a 400,
	// not in the contract's JSON shape, and nothing stored.
	for name, id := range map[string]string{"NUL": "msg_\x00", "CR": "msg_\r1"} {
		t.Run("refused by net/http: "+name, func(t *testing.T) {
			t.Parallel()
			f := hostile(t)
			sig := signature(t, testSecret, id, f.opts.now, created)
			f.remember(sig)
			f.remember(string(created))
			status := rawStatus(t, f.url, fmt.Sprintf("POST %s HTTP/1.1\r\nHost: ingest\r\nContent-Length: %d\r\nSvix-Id: %s\r\nSvix-Timestamp: %d\r\nSvix-Signature: %s\r\nConnection: close\r\n\r\n%s",
				routeWebhooks, len(created), id, f.opts.now.Unix(), sig, created))
			if status != http.StatusBadRequest {
				t.Errorf("status %d, want 400", status)
			}
			if n := f.msgs(t); n != 0 {
				t.Errorf("stream holds %d messages, want 0", n)
			}
		})
	}
}

// rawStatus writes req, as is, to the server at url and returns the status of its answer.
func rawStatus(t *testing.T, url, req string) int {
	t.Helper()
	var d net.Dialer
	conn, err := d.DialContext(t.Context(), "tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// TestForwardedNATSHeaders: HTTP headers named like JetStream's publish options are not passed
// on: the message carries the svix-id as its Nats-Msg-Id, and none of the others.
func TestForwardedNATSHeaders(t *testing.T) {
	t.Parallel()
	f := hostile(t)
	req := f.request(t, routeWebhooks, readFile(t, "user.created.json"))
	id := req.Header.Get("Svix-Id")
	forged := map[string]string{
		"Nats-Msg-Id":                 "forged",
		"Nats-Expected-Stream":        "OTHER",
		"Nats-Expected-Last-Sequence": "99",
		"Nats-Rollup":                 "all",
		"Nats-TTL":                    "1s",
		"Clerk-Event-Type":            "user.deleted",
		"Received-At":                 "1970-01-01T00:00:00Z",
	}
	for k, v := range forged {
		req.Header.Set(k, v)
	}
	if got := send(t, req); got.status != http.StatusOK {
		t.Fatalf("answer %+v, want 200", got)
	}
	m := f.stored(t, 1)
	if got := m.Header.Get(event.HeaderMsgID); got != id {
		t.Errorf("Nats-Msg-Id %q, want the svix-id %q", got, id)
	}
	for k, v := range forged {
		if slices.Contains(m.Header.Values(k), v) {
			t.Errorf("the request's %s: %s reached the stream", k, v)
		}
	}
}

// TestOtherMethods: any method but POST is 405 method_not_allowed with Allow: POST, even with a
// valid signed webhook in it, and nothing is stored. (GET, and PUT on the alias, are TestStatuses'.)
func TestOtherMethods(t *testing.T) {
	t.Parallel()
	created := readFile(t, "user.created.json")
	tests := []struct{ method, path string }{
		{http.MethodPut, routeWebhooks},
		{http.MethodDelete, routeWebhooks},
		{http.MethodPatch, routeWebhooks},
		{http.MethodOptions, routeWebhooks},
		{http.MethodTrace, routeWebhooks},
		{http.MethodHead, routeWebhooks},
		{"post", routeWebhooks}, // methods are case-sensitive
		{"PROPFIND", routeWebhooks},
		{http.MethodGet, routeWebhooksAlias},
		{http.MethodDelete, routeWebhooksAlias},
		{http.MethodPatch, routeWebhooksAlias},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			f := hostile(t)
			req := f.request(t, tt.path, created)
			req.Method = tt.method
			var status int
			var allow string
			if tt.method == http.MethodHead { // no body to decode
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				status, allow = resp.StatusCode, resp.Header.Get("Allow")
			} else {
				got := send(t, req)
				if got.code != "method_not_allowed" {
					t.Errorf("code %q, want method_not_allowed", got.code)
				}
				status, allow = got.status, got.header.Get("Allow")
			}
			if status != http.StatusMethodNotAllowed || allow != http.MethodPost {
				t.Errorf("status %d, Allow %q; want 405, POST", status, allow)
			}
			if n := f.msgs(t); n != 0 {
				t.Errorf("stream holds %d messages, want 0", n)
			}
		})
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) Close() error { return nil }

// TestBodyLimitReadsLittle: a body over the limit is refused 413 having read at most limit+1 bytes
// of it, whatever Content-Length says or whether there is one; over a connection, the server then
// closes it rather than drain the rest.
func TestBodyLimitReadsLittle(t *testing.T) {
	t.Parallel()
	const limit = 1024
	over := func(t *testing.T) []byte {
		t.Helper()
		return padded(t, `{"type":"user.created","data":{"id":"user_1"},"pad":"`, limit+1)
	}
	tests := []struct {
		name          string
		body          func(t *testing.T) io.Reader
		contentLength func(n int) int64 // of the body's size n, -1 when unknown
		status        int
		code          string
	}{
		{"one byte over, with Content-Length", func(t *testing.T) io.Reader { t.Helper(); return bytes.NewReader(over(t)) },
			func(n int) int64 { return int64(n) }, http.StatusRequestEntityTooLarge, "payload_too_large"},
		{"one byte over, chunked", func(t *testing.T) io.Reader { t.Helper(); return bytes.NewReader(over(t)) },
			func(int) int64 { return -1 }, http.StatusRequestEntityTooLarge, "payload_too_large"},
		{"one byte over, Content-Length understated", func(t *testing.T) io.Reader { t.Helper(); return bytes.NewReader(over(t)) },
			func(int) int64 { return 10 }, http.StatusRequestEntityTooLarge, "payload_too_large"},
		{"endless, chunked", func(*testing.T) io.Reader { return zeros{} },
			func(int) int64 { return -1 }, http.StatusRequestEntityTooLarge, "payload_too_large"},
		{"endless, Content-Length of the limit", func(*testing.T) io.Reader { return zeros{} },
			func(int) int64 { return limit }, http.StatusRequestEntityTooLarge, "payload_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := hostile(t, withMaxBody(limit))
			body := tt.body(t)
			size := -1
			if br, ok := body.(*bytes.Reader); ok {
				size = br.Len()
			}
			req := f.request(t, routeWebhooks, over(t)) // for its headers
			counted := &countingReader{r: body}
			req.Body, req.GetBody, req.ContentLength = counted, nil, tt.contentLength(size)
			got := serveDirect(t, f.handler, req)
			if got.status != tt.status || got.code != tt.code {
				t.Errorf("answer %d %q, want %d %q", got.status, got.code, tt.status, tt.code)
			}
			if counted.n > limit+1 {
				t.Errorf("read %d bytes of the body, want at most %d", counted.n, limit+1)
			}
			t.Logf("read %d bytes of the body", counted.n)
			if n := f.msgs(t); n != 0 {
				t.Errorf("stream holds %d messages, want 0", n)
			}
		})
	}

	// The control: a chunked body of exactly the limit is read whole and stored.
	t.Run("exactly the limit, chunked", func(t *testing.T) {
		t.Parallel()
		f := hostile(t, withMaxBody(limit))
		body := padded(t, `{"type":"user.created","data":{"id":"user_1"},"pad":"`, limit)
		req := f.request(t, routeWebhooks, body)
		counted := &countingReader{r: bytes.NewReader(body)}
		req.Body, req.GetBody, req.ContentLength = counted, nil, -1
		if got := serveDirect(t, f.handler, req); got.status != http.StatusOK {
			t.Fatalf("answer %+v, want 200", got)
		}
		if counted.n != limit {
			t.Errorf("read %d bytes, want %d", counted.n, limit)
		}
		if m := f.stored(t, 1); !bytes.Equal(m.Data, body) {
			t.Error("stored body differs from the request's")
		}
	})

	t.Run("over a connection, chunked: closed after the 413", func(t *testing.T) {
		t.Parallel()
		f := hostile(t, withMaxBody(limit))
		req := f.request(t, routeWebhooks, over(t))
		req.Body, req.GetBody, req.ContentLength = io.NopCloser(io.LimitReader(zeros{}, 64<<20)), nil, -1
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := decode(t, resp.StatusCode, resp.Header, b); got.status != http.StatusRequestEntityTooLarge || got.code != "payload_too_large" {
			t.Errorf("answer %d %q, want 413 payload_too_large", got.status, got.code)
		}
		if !resp.Close {
			t.Error("the server keeps the connection open: it would drain the rest of the body")
		}
		if n := f.msgs(t); n != 0 {
			t.Errorf("stream holds %d messages, want 0", n)
		}
	})
}

// TestContentEncodingAttacks extends TestContentEncodingNotUndone: a body signed uncompressed and
// sent compressed, whatever the coding's name, is 401 invalid_signature; a gzip bomb signed as sent
// is verified as the bytes it is and refused as not JSON, never inflated.
func TestContentEncodingAttacks(t *testing.T) {
	t.Parallel()
	created := readFile(t, "user.created.json")
	compressed := func(t *testing.T, coding string, plain []byte) []byte {
		t.Helper()
		var b bytes.Buffer
		var w io.WriteCloser
		switch coding {
		case "deflate":
			fw, err := flate.NewWriter(&b, flate.BestCompression)
			if err != nil {
				t.Fatal(err)
			}
			w = fw
		default:
			w = gzip.NewWriter(&b)
		}
		if _, err := w.Write(plain); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	// signedPlainSentAs signs created and sends it compressed, labelled coding.
	signedPlainSentAs := func(coding string, chunked bool) func(*testing.T, *fixture) *http.Request {
		return tampered(created, func(t *testing.T, f *fixture, r *http.Request) {
			t.Helper()
			setBody(f, r, compressed(t, coding, created))
			if chunked {
				r.ContentLength = -1
			}
			r.Header.Set("Content-Encoding", coding)
		})
	}
	unauthorized := []attack{
		{name: "deflate of the signed body", request: signedPlainSentAs("deflate", false)},
		{name: "x-gzip of the signed body", request: signedPlainSentAs("x-gzip", false)},
		{name: "gzip of the signed body, chunked", request: signedPlainSentAs("gzip", true)},
	}
	for i := range unauthorized {
		unauthorized[i].status, unauthorized[i].code = http.StatusUnauthorized, "invalid_signature"
	}
	refuseAll(t, append(unauthorized, attack{
		// 16 MiB of zeros in about 16 KiB: far under the limit as sent, 64 times over it inflated.
		name: "gzip bomb signed as sent",
		request: func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			if _, err := io.Copy(zw, io.LimitReader(zeros{}, 16<<20)); err != nil {
				t.Fatal(err)
			}
			if err := zw.Close(); err != nil {
				t.Fatal(err)
			}
			if int64(b.Len()) > f.opts.maxBody {
				t.Fatalf("bomb of %d bytes is over the limit", b.Len())
			}
			r := f.request(t, routeWebhooks, b.Bytes())
			r.Header.Set("Content-Encoding", "gzip")
			return r
		},
		status: http.StatusBadRequest, code: "malformed_payload",
	}))
}

// TestSignatureHeaderCost: however many signatures a header holds, ingest's work per request is
// bounded: a header over 8 KiB is refused before the svix library splits it, and one within 8 KiB
// costs at most linear work in that bounded size, per secret.
//
// Work is measured as heap allocations, not time, so a slow or loaded machine cannot make it
// flake: the svix library allocates for every entry it examines (strings.Split of the entry), so
// passing 10,000 entries to it would cost at least 10,000 allocations and several hundred KiB per
// secret, and anything quadratic far more. The counters are process-wide, so the test and its
// measured subtests are not parallel: Go runs a sequential test while every parallel one (the
// flood among them) is paused. The bounds sit far above what remains of the noise and ingest's
// own cost (a few dozen allocations and KiB), and well below an unbounded pass.
func TestSignatureHeaderCost(t *testing.T) { // not parallel: process-wide counters, see above
	created := readFile(t, "user.created.json")
	secrets := []string{unknownSecret, rotatedSecret, testSecret}
	entry := "v1," + strings.Repeat("A", 43) + "=" // the length of a real signature
	tests := []struct {
		name   string
		header func(valid string) string
		// most allocations and bytes a request may cost, on average
		allocs, bytes float64
	}{
		{"10,000 signatures, the valid one last", func(valid string) string {
			return strings.Repeat(entry+" ", 9999) + valid
		}, 2_000, 256 << 10},
		{"10,000 empty v1 signatures", func(string) string {
			return strings.TrimSpace(strings.Repeat("v1, ", 10_000))
		}, 2_000, 256 << 10},
		{"8 KiB and one byte, in one entry", func(string) string {
			return "v1," + strings.Repeat("A", maxSignatureHeader-2)
		}, 2_000, 256 << 10},
		// Within the bound: the library's linear pass, 3 secrets over at most 8 KiB. 2,048 entries
		// cost about 2 allocations each per secret; 8 Ki commas one []string of 8 Ki strings per
		// secret. A quadratic pass would cost millions of allocations or hundreds of MiB.
		{"8 KiB of empty v1 signatures", func(string) string {
			return strings.TrimSpace(strings.Repeat("v1, ", maxSignatureHeader/4))
		}, 40_000, 4 << 20},
		{"8 KiB of commas", func(string) string {
			return "v1" + strings.Repeat(",", maxSignatureHeader-2)
		}, 2_000, 4 << 20},
	}
	for _, tt := range tests { //nolint:paralleltest // process-wide counters, see above
		t.Run(tt.name, func(t *testing.T) {
			f := hostile(t, withSecrets(secrets...))
			proto := f.request(t, routeWebhooks, created)
			header := tt.header(proto.Header.Get("Svix-Signature"))
			f.remember(header)

			// Noise only ever adds to the counters, so the quietest of several batches is the
			// closest to ingest's own cost.
			const batches, runs = 10, 20
			allocs, bytesPer := math.Inf(1), math.Inf(1)
			for range batches {
				reqs := make([]*http.Request, runs)
				recs := make([]*httptest.ResponseRecorder, runs)
				for i := range reqs {
					reqs[i] = proto.Clone(t.Context())
					reqs[i].Header.Set("Svix-Signature", header)
					reqs[i].Body = io.NopCloser(bytes.NewReader(created))
					recs[i] = httptest.NewRecorder()
				}
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				for i, r := range reqs {
					f.handler.ServeHTTP(recs[i], r)
				}
				runtime.ReadMemStats(&after)
				allocs = min(allocs, float64(after.Mallocs-before.Mallocs)/runs)
				bytesPer = min(bytesPer, float64(after.TotalAlloc-before.TotalAlloc)/runs)
				for _, rec := range recs {
					if got := decode(t, rec.Code, rec.Header(), rec.Body.Bytes()); got.status != http.StatusUnauthorized || got.code != "invalid_signature" {
						t.Fatalf("answer %d %q, want 401 invalid_signature", got.status, got.code)
					}
				}
			}
			t.Logf("signature header of %d bytes: %.0f allocations, %.0f bytes per request", len(header), allocs, bytesPer)
			if allocs > tt.allocs {
				t.Errorf("%.0f allocations per request, want at most %.0f", allocs, tt.allocs)
			}
			if bytesPer > tt.bytes {
				t.Errorf("%.0f bytes allocated per request, want at most %.0f", bytesPer, tt.bytes)
			}
			if n := f.msgs(t); n != 0 {
				t.Errorf("stream holds %d messages, want 0", n)
			}
		})
	}

	// Over a connection (the test server takes headers up to 1 MiB; ingest's own server stops at
	// 64 KiB, see TestSlowAndHugeClients), 10,000 signatures get the same answer.
	t.Run("10,000 signatures over a connection", func(t *testing.T) {
		t.Parallel()
		f := hostile(t, withSecrets(secrets...))
		req := f.request(t, routeWebhooks, created)
		setSignature(f, req, strings.Repeat(entry+" ", 9999)+req.Header.Get("Svix-Signature"))
		if got := send(t, req); got.status != http.StatusUnauthorized || got.code != "invalid_signature" {
			t.Errorf("answer %d %q, want 401 invalid_signature", got.status, got.code)
		}
		if n := f.msgs(t); n != 0 {
			t.Errorf("stream holds %d messages, want 0", n)
		}
	})
}

// TestSlowAndHugeClients runs ingest through Run, with its own server's limits: a body trickled
// at a byte a second is cut off by the read timeout, headers trickled by the header timeout, and
// a header block over the server's maximum is refused; nothing is stored. The bounds derive from
// the timeouts service.NewServer sets (ingest has no setting for them), plus slack for a slow
// machine. The body case takes the read timeout, 15 s, in the background.
func TestSlowAndHugeClients(t *testing.T) {
	t.Parallel()
	srv := eventtest.NewServer(t)
	s := start(t, map[string]string{"NATS_URL": srv.URL(), "CLERK_WEBHOOK_SECRET": testSecret})
	s.waitReady(t)
	limits := service.NewServer(http.NotFoundHandler(), slog.New(slog.DiscardHandler))
	if limits.ReadTimeout <= 0 || limits.ReadHeaderTimeout <= 0 || limits.MaxHeaderBytes <= 0 {
		t.Fatalf("ingest's server does not bound slow clients: read timeout %s, header timeout %s, max header bytes %d",
			limits.ReadTimeout, limits.ReadHeaderTimeout, limits.MaxHeaderBytes)
	}
	const slack = 10 * time.Second
	body := readFile(t, "user.created.json")
	host := strings.TrimPrefix(s.url, "http://")
	var mu sync.Mutex
	var sent []string // signatures and bodies, which the logs must never hold
	signedHead := func(contentLength int, sig string) string {
		now := time.Now()
		id := newID()
		if sig == "" {
			sig = signature(t, testSecret, id, now, body)
		}
		mu.Lock()
		sent = append(sent, sig, strings.TrimPrefix(sig, "v1,"))
		mu.Unlock()
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nSvix-Id: %s\r\nSvix-Timestamp: %d\r\nSvix-Signature: %s\r\n\r\n",
			routeWebhooks, host, contentLength, id, now.Unix(), sig)
	}

	var wg sync.WaitGroup
	// trickle writes head at once, then trickled a byte a second, and checks that the server
	// closes the connection within bound and answers nothing but an error.
	trickle := func(name, head string, trickled []byte, bound time.Duration) {
		wg.Go(func() {
			var d net.Dialer
			conn, err := d.DialContext(t.Context(), "tcp", host)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				return
			}
			defer func() { _ = conn.Close() }()
			began := time.Now()
			if _, err := io.WriteString(conn, head); err != nil {
				t.Errorf("%s: %v", name, err)
				return
			}
			stop := make(chan struct{})
			var writer sync.WaitGroup
			writer.Go(func() {
				tick := time.NewTicker(time.Second)
				defer tick.Stop()
				for i := range trickled {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					if _, err := conn.Write(trickled[i : i+1]); err != nil {
						return // closed by the server
					}
				}
			})
			_ = conn.SetReadDeadline(began.Add(bound))
			answer, err := io.ReadAll(conn)
			elapsed := time.Since(began)
			close(stop)
			writer.Wait()
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				t.Errorf("%s: the server still holds the connection after %s (bound %s)", name, elapsed.Round(time.Millisecond), bound)
				return
			}
			// A reset is a close too: the server closed with bytes unread.
			if bytes.HasPrefix(answer, []byte("HTTP/1.1 2")) {
				t.Errorf("%s: answered %q", name, firstLine(answer))
			}
			t.Logf("%s: closed after %s, answer %q", name, elapsed.Round(time.Millisecond), firstLine(answer))
		})
	}
	trickle("body at 1 byte/s", signedHead(len(body), ""), body, limits.ReadTimeout+slack)
	trickle("headers at 1 byte/s", "POST "+routeWebhooks+" HTTP/1.1\r\nHost: "+host+"\r\n",
		[]byte("Svix-Id: msg_trickled_header_that_never_ends_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n"), limits.ReadHeaderTimeout+slack)

	// 10,000 signatures: a header block over the server's maximum, refused before the handler
	// (a 431 from net/http, or the connection cut while the client still writes).
	wg.Go(func() {
		sig := strings.Repeat("v1,"+strings.Repeat("A", 43)+"= ", 10_000)
		if len(sig) <= limits.MaxHeaderBytes {
			t.Errorf("signature header of %d bytes is within the server's %d", len(sig), limits.MaxHeaderBytes)
		}
		var d net.Dialer
		conn, err := d.DialContext(t.Context(), "tcp", host)
		if err != nil {
			t.Errorf("huge header: %v", err)
			return
		}
		var writer sync.WaitGroup
		defer func() {
			_ = conn.Close() // ends a blocked write
			writer.Wait()
		}()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		req := signedHead(len(body), strings.TrimSpace(sig)) + string(body)
		writer.Go(func() { _, _ = io.WriteString(conn, req) })
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Logf("huge header: connection cut: %v", err)
			return
		}
		_ = resp.Body.Close()
		t.Logf("huge header: %s", resp.Status)
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("huge header: status %d, want 431", resp.StatusCode)
		}
	})
	wg.Wait()

	_, js := eventtest.Connect(t, srv.URL())
	stream, err := js.Stream(t.Context(), event.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("stream holds %d messages, want 0", info.State.Msgs)
	}
	logs := s.logs.String()
	for _, secret := range append(sent, testSecret, strings.TrimPrefix(testSecret, secretPrefix), string(body)) {
		if strings.Contains(logs, secret) {
			t.Errorf("logs hold a secret, signature or body: %.40q…", secret)
		}
	}
}

// firstLine is the first line of an HTTP answer, for messages.
func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	return string(line)
}

// TestFlood: about 1,000 invalid webhooks a second (forged signatures, stale timestamps, missing
// headers, wrong methods, bodies over the limit) while valid ones arrive at 20 a second: every
// valid one is answered 200 and stored. The flood lasts 5 s so that make test runs it, and there
// the p99 of the valid deliveries is only logged: make test never asserts a timing (the machine is
// shared; under the race detector on 2 loaded cores it measured 0.26–0.80 s). CLERKSYNC_FLOOD=30s
// runs the full 30 s and then also holds the p99 to the bound of 1 s. The log holds the rate the flood reached (a loaded machine floods less: requests found no
// idle sender are dropped, not queued), the valid deliveries' latency before the flood and during
// it, and JetStream's share of it, so a slow run shows whether the flood or the machine is to
// blame.
func TestFlood(t *testing.T) {
	t.Parallel()
	duration, checkP99 := 5*time.Second, false
	if v := os.Getenv("CLERKSYNC_FLOOD"); v != "" {
		checkP99 = true
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CLERKSYNC_FLOOD: %v", err)
		}
		duration = d
	}
	const (
		floodRate  = 1000 // invalid requests per second
		validEvery = 50 * time.Millisecond
		baseline   = time.Second // of valid deliveries alone, before the flood
		floodConns = 16
		p99Bound   = time.Second
		bodyLimit  = 4 << 10
	)
	f := hostile(t, withMaxBody(bodyLimit))
	transport := &http.Transport{MaxIdleConnsPerHost: floodConns + 8}
	t.Cleanup(transport.CloseIdleConnections)
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	created := readFile(t, "user.created.json")

	// The invalid requests, each kind built once (so the logs are checked for a handful of
	// signatures and bodies, not thousands) and sent again and again.
	type kind struct {
		name   string
		method string
		header http.Header
		body   []byte
		status int
	}
	var kinds []kind
	add := func(name, method string, status int, mutate func(r *http.Request)) {
		r := f.request(t, routeWebhooks, created)
		mutate(r)
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, kind{name, method, r.Header, b, status})
	}
	add("forged signature", http.MethodPost, http.StatusUnauthorized, func(r *http.Request) {
		setSignature(f, r, signature(t, unknownSecret, r.Header.Get("Svix-Id"), f.opts.now, created))
	})
	add("stale timestamp", http.MethodPost, http.StatusUnauthorized, func(r *http.Request) {
		old := f.opts.now.Add(-time.Hour)
		r.Header.Set("Svix-Timestamp", strconv.FormatInt(old.Unix(), 10))
		setSignature(f, r, signature(t, testSecret, r.Header.Get("Svix-Id"), old, created))
	})
	add("missing headers", http.MethodPost, http.StatusBadRequest, func(r *http.Request) { r.Header.Del("Svix-Signature") })
	add("wrong method", http.MethodPut, http.StatusMethodNotAllowed, func(*http.Request) {})
	add("over the limit", http.MethodPost, http.StatusRequestEntityTooLarge, func(r *http.Request) {
		setBody(f, r, bytes.Repeat(created, bodyLimit/len(created)+1))
	})

	do := func(method string, header http.Header, body []byte) (int, ack, error) {
		req, err := http.NewRequestWithContext(t.Context(), method, f.url+routeWebhooks, bytes.NewReader(body))
		if err != nil {
			return 0, ack{}, err
		}
		req.Header = header.Clone()
		resp, err := client.Do(req)
		if err != nil {
			return 0, ack{}, err
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, ack{}, err
		}
		var a ack
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(b, &a); err != nil {
				return 0, ack{}, fmt.Errorf("status 200, body %q: %w", b, err)
			}
		}
		return resp.StatusCode, a, nil
	}

	// The valid deliveries, signed beforehand, each sent on its own goroutine so that one slow
	// answer does not delay the next.
	deliveries := make([]http.Header, int((baseline+duration)/validEvery)+2)
	for i := range deliveries {
		id := newID()
		sig := signature(t, testSecret, id, f.opts.now, created)
		f.remember(sig)
		h := http.Header{}
		h.Set("Content-Type", "application/json")
		h.Set("Svix-Id", id)
		h.Set("Svix-Timestamp", strconv.FormatInt(f.opts.now.Unix(), 10))
		h.Set("Svix-Signature", sig)
		deliveries[i] = h
	}
	var (
		mu          sync.Mutex
		stored      int
		validFailed []string
	)
	// deliver sends deliveries at validEvery until ctx ends, and returns their latencies.
	deliver := func(ctx context.Context) []time.Duration {
		var latencies []time.Duration
		tick := time.NewTicker(validEvery)
		defer tick.Stop()
		var valid sync.WaitGroup
		for {
			select {
			case <-ctx.Done():
				valid.Wait()
				return latencies
			case <-tick.C:
			}
			mu.Lock()
			if len(deliveries) == 0 {
				mu.Unlock()
				continue
			}
			h := deliveries[0]
			deliveries = deliveries[1:]
			mu.Unlock()
			id := h.Get("Svix-Id")
			valid.Go(func() {
				began := time.Now()
				status, a, err := do(http.MethodPost, h, created)
				took := time.Since(began)
				mu.Lock()
				defer mu.Unlock()
				if err != nil || status != http.StatusOK || a != (ack{ID: id}) {
					validFailed = append(validFailed, fmt.Sprintf("%s: status %d, ack %+v (%v)", id, status, a, err))
					return
				}
				stored++
				latencies = append(latencies, took)
			})
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), baseline)
	quiet := deliver(ctx)
	cancel()

	ctx, cancel = context.WithTimeout(t.Context(), duration)
	defer cancel()
	var (
		wg                             sync.WaitGroup
		floodSent, floodWrong, dropped atomic.Int64
		firstWrong                     atomic.Value
		flooded                        []time.Duration
	)
	// The flood: a pacer wakes every millisecond or so and hands the requests due by then (at
	// floodRate since the start) to idle senders.
	jobs := make(chan kind)
	for range floodConns {
		wg.Go(func() {
			for k := range jobs {
				status, _, err := do(k.method, k.header, k.body)
				floodSent.Add(1)
				if err != nil || status != k.status {
					floodWrong.Add(1)
					firstWrong.CompareAndSwap(nil, fmt.Sprintf("%s: status %d, want %d (%v)", k.name, status, k.status, err))
				}
			}
		})
	}
	wg.Go(func() {
		defer close(jobs)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		began := time.Now()
		for handed := 0; ; {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for due := int(time.Since(began).Seconds() * floodRate); handed < due; handed++ {
				select {
				case jobs <- kinds[handed%len(kinds)]:
				default:
					dropped.Add(1)
				}
			}
		}
	})
	wg.Go(func() { flooded = deliver(ctx) })
	wg.Wait()

	t.Logf("flood: %d invalid requests in %s (%.0f/s; %d more were due but found no idle sender)",
		floodSent.Load(), duration, float64(floodSent.Load())/duration.Seconds(), dropped.Load())
	if n := floodWrong.Load(); n > 0 {
		t.Errorf("%d invalid requests got another answer than their refusal; first: %v", n, firstWrong.Load())
	}
	for _, failed := range validFailed {
		t.Errorf("valid delivery: %s", failed)
	}
	if len(quiet) == 0 || len(flooded) == 0 {
		t.Fatalf("valid deliveries: %d before the flood, %d during it", len(quiet), len(flooded))
	}
	publishes, publishP99 := histogramQuantile(t, f, 0.99)
	t.Logf("valid deliveries before the flood: %s", summary(quiet))
	t.Logf("valid deliveries during the flood: %s", summary(flooded))
	t.Logf("JetStream's part: publish p99 ≤ %gs over all %d publishes", publishP99, publishes)
	if p99 := quantile(flooded, 0.99); checkP99 && p99 > p99Bound {
		t.Errorf("p99 of valid deliveries during the flood is %s, want under %s", p99, p99Bound)
	}
	if n := f.msgs(t); n != uint64(stored) {
		t.Errorf("stream holds %d messages, want the %d valid deliveries", n, stored)
	}
}

// quantile returns the q-quantile of d, sorting it.
func quantile(d []time.Duration, q float64) time.Duration {
	slices.Sort(d)
	return d[max(int(math.Ceil(q*float64(len(d))))-1, 0)]
}

func summary(d []time.Duration) string {
	return fmt.Sprintf("%d, p50 %s, p99 %s, max %s", len(d), quantile(d, 0.5).Round(time.Microsecond),
		quantile(d, 0.99).Round(time.Microsecond), quantile(d, 1).Round(time.Microsecond))
}

// histogramQuantile returns how many successful publishes ingest's publish-duration histogram
// counted, and the upper bound of the bucket that holds its q-quantile.
func histogramQuantile(t *testing.T, f *fixture, q float64) (uint64, float64) {
	t.Helper()
	families, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() != "clerksync_ingest_publish_duration_seconds" {
			continue
		}
		for _, m := range fam.GetMetric() {
			ok := false
			for _, l := range m.GetLabel() {
				ok = ok || l.GetName() == "result" && l.GetValue() == "ok"
			}
			if !ok {
				continue
			}
			h := m.GetHistogram()
			for _, b := range h.GetBucket() {
				if float64(b.GetCumulativeCount()) >= q*float64(h.GetSampleCount()) {
					return h.GetSampleCount(), b.GetUpperBound()
				}
			}
			return h.GetSampleCount(), math.Inf(1)
		}
	}
	return 0, math.NaN()
}
