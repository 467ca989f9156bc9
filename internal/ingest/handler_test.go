package ingest

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestStatuses has one row (or more) per line of the contract's ingest status table, and checks
// that every refused request added nothing to the stream.
func TestStatuses(t *testing.T) {
	t.Parallel()
	created := readFile(t, "user.created.json")
	signedBody := func(body string) func(*testing.T, *fixture) *http.Request {
		return func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			return f.request(t, routeWebhooks, []byte(body))
		}
	}
	edit := func(change func(*http.Request)) func(*testing.T, *fixture) *http.Request {
		return func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			r := f.request(t, routeWebhooks, created)
			change(r)
			return r
		}
	}
	withID := func(id string) func(*testing.T, *fixture) *http.Request {
		return func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			return f.signedRequest(t, routeWebhooks, testSecret, id, f.opts.now, created)
		}
	}
	at := func(ts time.Time) func(*testing.T, *fixture) *http.Request {
		return func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			return f.signedRequest(t, routeWebhooks, testSecret, newID(), ts, created)
		}
	}
	method := func(m, path string) func(*testing.T, *fixture) *http.Request {
		return func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			r := f.request(t, path, created)
			r.Method = m
			return r
		}
	}
	// bodyOfSize is a signed, valid webhook of exactly n bytes.
	bodyOfSize := func(n int) func(*testing.T, *fixture) *http.Request {
		return func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			return f.request(t, routeWebhooks, padded(t, `{"type":"user.created","data":{"id":"user_1"},"pad":"`, n))
		}
	}

	tests := []struct {
		name    string
		opts    []func(*options)
		request func(*testing.T, *fixture) *http.Request
		// outage stops NATS for the request, and starts it again before the stream is counted;
		// partition makes the network to NATS swallow everything, and then cuts the connection.
		outage, partition bool
		status            int
		code              string // "" for a 200
		added             uint64
		dup               bool
	}{
		// stored (or already stored: same svix-id) → 200 {"id","duplicate"}
		{name: "stored", request: signedBody(string(created)), status: 200, added: 1},
		{name: "stored via the /api/webhooks alias", request: func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			return f.request(t, routeWebhooksAlias, created)
		}, status: 200, added: 1},
		{name: "stored: a non-user event", request: signedBody(string(readFile(t, "session.created.json"))), status: 200, added: 1},
		{name: "stored: body of exactly the limit", opts: []func(*options){withMaxBody(1024)}, request: bodyOfSize(1024), status: 200, added: 1},
		{name: "already stored: same svix-id", request: func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			first := f.request(t, routeWebhooks, created)
			again := f.request(t, routeWebhooks, created)
			again.Header = first.Header.Clone()
			if a := send(t, first); a.status != 200 || a.ack.Duplicate {
				t.Fatalf("first delivery: %+v", a)
			}
			return again
		}, status: 200, dup: true},

		// a svix header missing → 400 missing_headers
		{name: "svix-id missing", request: edit(func(r *http.Request) { r.Header.Del("Svix-Id") }), status: 400, code: "missing_headers"},
		{name: "svix-timestamp missing", request: edit(func(r *http.Request) { r.Header.Del("Svix-Timestamp") }), status: 400, code: "missing_headers"},
		{name: "svix-signature missing", request: edit(func(r *http.Request) { r.Header.Del("Svix-Signature") }), status: 400, code: "missing_headers"},
		{name: "svix-id empty", request: edit(func(r *http.Request) { r.Header.Set("Svix-Id", "") }), status: 400, code: "missing_headers"},
		{name: "no signature headers", request: edit(func(r *http.Request) {
			for _, h := range []string{"Svix-Id", "Svix-Timestamp", "Svix-Signature"} {
				r.Header.Del(h)
			}
		}), status: 400, code: "missing_headers"},
		{name: "half svix-*, half webhook-*", request: edit(func(r *http.Request) {
			move(r.Header, "Svix-Timestamp", "Webhook-Timestamp")
			move(r.Header, "Svix-Signature", "Webhook-Signature")
		}), status: 400, code: "missing_headers"},

		// timestamp not an integer, or an id that is not 1–255 printable ASCII → 400 invalid_headers
		{name: "timestamp not an integer", request: edit(func(r *http.Request) {
			r.Header.Set("Svix-Timestamp", r.Header.Get("Svix-Timestamp")+".5")
		}), status: 400, code: "invalid_headers"},
		{name: "timestamp in words", request: edit(func(r *http.Request) { r.Header.Set("Svix-Timestamp", "now") }), status: 400, code: "invalid_headers"},
		{name: "timestamp over int64", request: edit(func(r *http.Request) { r.Header.Set("Svix-Timestamp", "99999999999999999999") }), status: 400, code: "invalid_headers"},
		{name: "id over 255 bytes", request: withID("msg_" + strings.Repeat("x", 252)), status: 400, code: "invalid_headers"},
		{name: "id with a tab", request: withID("msg\t1"), status: 400, code: "invalid_headers"},
		{name: "id with a non-ASCII byte", request: withID("msg_\xff"), status: 400, code: "invalid_headers"},
		{name: "id of 255 bytes is fine", request: withID("msg_" + strings.Repeat("x", 251)), status: 200, added: 1},

		// not JSON / no type / no data / bad type → 400 malformed_payload / invalid_event_type
		{name: "not JSON", request: signedBody(`type=user.created`), status: 400, code: "malformed_payload"},
		{name: "JSON array", request: signedBody(`[{"type":"user.created","data":{"id":"u"}}]`), status: 400, code: "malformed_payload"},
		{name: "no type", request: signedBody(`{"data":{"id":"user_1"}}`), status: 400, code: "malformed_payload"},
		{name: "type not a string", request: signedBody(`{"type":7,"data":{"id":"user_1"}}`), status: 400, code: "malformed_payload"},
		{name: "no data", request: signedBody(`{"type":"user.created"}`), status: 400, code: "malformed_payload"},
		{name: "data not an object", request: signedBody(`{"type":"user.created","data":"user_1"}`), status: 400, code: "malformed_payload"},
		{name: "user event without data.id", request: signedBody(`{"type":"user.updated","data":{"first_name":"A"}}`), status: 400, code: "malformed_payload"},
		{name: "bad type: a NATS wildcard", request: signedBody(`{"type":"user.>","data":{"id":"user_1"}}`), status: 400, code: "invalid_event_type"},
		{name: "bad type: one segment", request: signedBody(`{"type":"user","data":{"id":"user_1"}}`), status: 400, code: "invalid_event_type"},
		{name: "bad type: over 255 bytes", request: signedBody(`{"type":"a.` + strings.Repeat("b", 254) + `","data":{}}`), status: 400, code: "invalid_event_type"},

		// signature wrong, or timestamp outside tolerance → 401 invalid_signature
		{name: "signature wrong", request: edit(func(r *http.Request) {
			r.Header.Set("Svix-Signature", "v1,"+strings.Repeat("A", 43)+"=")
		}), status: 401, code: "invalid_signature"},
		{name: "signed with an unknown secret", request: func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			return f.signedRequest(t, routeWebhooks, unknownSecret, newID(), f.opts.now, created)
		}, status: 401, code: "invalid_signature"},
		{name: "signature of another id", request: edit(func(r *http.Request) { r.Header.Set("Svix-Id", newID()) }), status: 401, code: "invalid_signature"},
		{name: "body changed after signing", request: func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			r := f.request(t, routeWebhooks, created)
			changed := bytes.Replace(created, []byte("example@example.org"), []byte("attacker@example.org"), 1)
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(changed)), int64(len(changed))
			return r
		}, status: 401, code: "invalid_signature"},
		{name: "signature version not v1", request: edit(func(r *http.Request) {
			r.Header.Set("Svix-Signature", strings.Replace(r.Header.Get("Svix-Signature"), "v1,", "v2,", 1))
		}), status: 401, code: "invalid_signature"},
		{name: "timestamp too old", request: at(testNow.Add(-tolerance - time.Second)), status: 401, code: "invalid_signature"},
		{name: "timestamp too new", request: at(testNow.Add(tolerance + time.Second)), status: 401, code: "invalid_signature"},
		{name: "signature header over 8 KiB, valid one included", request: edit(func(r *http.Request) {
			r.Header.Set("Svix-Signature", strings.Repeat("v1,"+strings.Repeat("A", 43)+"= ", 200)+r.Header.Get("Svix-Signature"))
		}), status: 401, code: "invalid_signature"},

		// body over the limit → 413 payload_too_large
		{name: "body over the limit", opts: []func(*options){withMaxBody(1024)}, request: bodyOfSize(1025), status: 413, code: "payload_too_large"},
		{name: "chunked body over the limit", opts: []func(*options){withMaxBody(1024)}, request: func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			r := bodyOfSize(1025)(t, f)
			r.ContentLength = -1 // sent chunked: no Content-Length to trust
			r.Body = io.NopCloser(io.MultiReader(r.Body))
			return r
		}, status: 413, code: "payload_too_large"},
		{name: "body far over the limit, chunked", request: func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			r := f.request(t, routeWebhooks, created)
			r.ContentLength = -1
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(created), io.LimitReader(zeros{}, 64<<20)))
			return r
		}, status: 413, code: "payload_too_large"},

		// any method but POST → 405 method_not_allowed
		{name: "GET", request: method(http.MethodGet, routeWebhooks), status: 405, code: "method_not_allowed"},
		{name: "PUT on the alias", request: method(http.MethodPut, routeWebhooksAlias), status: 405, code: "method_not_allowed"},

		// unknown route → 404 not_found
		{name: "unknown route", request: func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			return f.request(t, "/webhooks/stripe", created)
		}, status: 404, code: "not_found"},
		{name: "route with a trailing segment", request: func(t *testing.T, f *fixture) *http.Request {
			t.Helper()
			return f.request(t, routeWebhooks+"/x", created)
		}, status: 404, code: "not_found"},

		// JetStream unreachable or no ack in PUBLISH_TIMEOUT → 503 stream_unavailable + Retry-After
		{
			name: "JetStream unreachable", opts: []func(*options){withPublishTimeout(time.Second)},
			request: signedBody(string(created)),
			outage:  true,
			status:  503, code: "stream_unavailable",
		},
		{
			name: "no ack within PUBLISH_TIMEOUT", opts: []func(*options){withPublishTimeout(500 * time.Millisecond), withProxy()},
			request:   signedBody(string(created)),
			partition: true,
			status:    503, code: "stream_unavailable",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t, tt.opts...)
			req := tt.request(t, f)
			before := f.msgs(t)
			switch {
			case tt.outage:
				f.nats.Shutdown()
			case tt.partition:
				f.proxy.freeze()
			}
			got := send(t, req)
			switch {
			case tt.outage:
				f.nats.Start()
			case tt.partition:
				f.proxy.cut()
			}
			if got.status != tt.status || got.code != tt.code {
				t.Fatalf("answer %d %q, want %d %q", got.status, got.code, tt.status, tt.code)
			}
			switch got.status {
			case http.StatusOK:
				want := ack{ID: req.Header.Get("Svix-Id"), Duplicate: tt.dup}
				if diff := cmp.Diff(want, got.ack); diff != "" {
					t.Errorf("ack (-want +got)\n%s", diff)
				}
			case http.StatusMethodNotAllowed:
				if allow := got.header.Get("Allow"); allow != http.MethodPost {
					t.Errorf("Allow = %q, want POST", allow)
				}
			case http.StatusServiceUnavailable:
				if ra := got.header.Get("Retry-After"); ra == "" {
					t.Error("503 without Retry-After")
				}
			}
			if added := f.msgs(t) - before; added != tt.added {
				t.Errorf("stream grew by %d messages, want %d", added, tt.added)
			}
		})
	}
}

// move renames a header.
func move(h http.Header, from, to string) {
	h.Set(to, h.Get(from))
	h.Del(from)
}

// padded returns prefix + padding + `"}` of exactly n bytes.
func padded(t testing.TB, prefix string, n int) []byte {
	t.Helper()
	pad := n - len(prefix) - len(`"}`)
	if pad < 0 {
		t.Fatalf("padded: %d bytes is too short for the prefix", n)
	}
	return []byte(prefix + strings.Repeat("x", pad) + `"}`)
}

// zeros reads zero bytes forever.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
