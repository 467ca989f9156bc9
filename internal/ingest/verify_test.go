package ingest

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	svix "github.com/svix/svix-webhooks/go"
)

// Svix's known-answer vector.
const (
	kavID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	kavTimestamp = 1614265330
	kavPayload   = `{"test": 2432232314}`
	kavSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestKnownAnswerVector(t *testing.T) {
	t.Parallel()
	wh, err := svix.NewWebhook(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := wh.Sign(kavID, time.Unix(kavTimestamp, 0), []byte(kavPayload))
	if err != nil {
		t.Fatal(err)
	}
	if got != kavSignature {
		t.Fatalf("svix signs the vector as %q, want %q", got, kavSignature)
	}

	// Through the whole handler, with its clock at the vector's time: the signature is accepted,
	// and only then is the payload (not a Clerk envelope) refused. Past the tolerance, the same
	// request is refused as unsigned.
	tests := []struct {
		name   string
		now    time.Time
		status int
		code   string
	}{
		{"at the vector's time", time.Unix(kavTimestamp, 0), 400, "malformed_payload"},
		{"5 min later", time.Unix(kavTimestamp, 0).Add(tolerance), 400, "malformed_payload"},
		{"5 min 1 s later", time.Unix(kavTimestamp, 0).Add(tolerance + time.Second), 401, "invalid_signature"},
		{"today", time.Now(), 401, "invalid_signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t, withNow(tt.now))
			req := f.signedRequest(t, routeWebhooks, testSecret, kavID, time.Unix(kavTimestamp, 0), []byte(kavPayload))
			if sig := req.Header.Get("Svix-Signature"); sig != kavSignature {
				t.Fatalf("request signed %q, want %q", sig, kavSignature)
			}
			got := send(t, req)
			if got.status != tt.status || got.code != tt.code {
				t.Errorf("answer %d %q, want %d %q", got.status, got.code, tt.status, tt.code)
			}
			if n := f.msgs(t); n != 0 {
				t.Errorf("stream holds %d messages, want 0", n)
			}
		})
	}
}

func TestTolerance(t *testing.T) {
	t.Parallel()
	tests := []struct {
		offset time.Duration
		status int
	}{
		{-tolerance, 200},
		{-tolerance - time.Second, 401},
		{tolerance, 200},
		{tolerance + time.Second, 401},
		{0, 200},
	}
	for _, tt := range tests {
		t.Run(tt.offset.String(), func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			got := send(t, f.signedRequest(t, routeWebhooks, testSecret, newID(), testNow.Add(tt.offset), readFile(t, "user.created.json")))
			if got.status != tt.status {
				t.Errorf("timestamp now%+v: status %d (%s), want %d", tt.offset, got.status, got.code, tt.status)
			}
		})
	}
}

// TestRotation: during a rotation both secrets are configured (new first), either signs, and the
// metric says which one matched.
func TestRotation(t *testing.T) {
	t.Parallel()
	f := setup(t, withSecrets(rotatedSecret, testSecret))
	body := readFile(t, "user.updated.json")
	matches := func(i int) float64 {
		return counter(t, f.reg, "clerksync_ingest_secret_matches_total", map[string]string{"secret": strconv.Itoa(i)})
	}

	if got := send(t, f.signedRequest(t, routeWebhooks, testSecret, newID(), testNow, body)); got.status != 200 {
		t.Fatalf("signed with the old secret: %d %s", got.status, got.code)
	}
	if got := []float64{matches(0), matches(1)}; !cmp.Equal(got, []float64{0, 1}) {
		t.Errorf("secret matches after the old one signed = %v, want [0 1]", got)
	}
	if got := send(t, f.signedRequest(t, routeWebhooks, rotatedSecret, newID(), testNow, body)); got.status != 200 {
		t.Fatalf("signed with the new secret: %d %s", got.status, got.code)
	}
	if got := []float64{matches(0), matches(1)}; !cmp.Equal(got, []float64{1, 1}) {
		t.Errorf("secret matches after the new one signed = %v, want [1 1]", got)
	}

	// What Svix sends during the 24 h overlap: both signatures in one header.
	id := newID()
	req := f.signedRequest(t, routeWebhooks, testSecret, id, testNow, body)
	req.Header.Set("Svix-Signature", signature(t, testSecret, id, testNow, body)+" "+signature(t, rotatedSecret, id, testNow, body))
	if got := send(t, req); got.status != 200 {
		t.Fatalf("signed with both: %d %s", got.status, got.code)
	}
	if got := []float64{matches(0), matches(1)}; !cmp.Equal(got, []float64{2, 1}) {
		t.Errorf("secret matches after both signed = %v, want [2 1] (the first configured secret wins)", got)
	}
	if n := f.msgs(t); n != 3 {
		t.Errorf("stream holds %d messages, want 3", n)
	}
}

func TestSeveralSignatures(t *testing.T) {
	t.Parallel()
	body := readFile(t, "user.created.json")
	bogus := "v1," + strings.Repeat("A", 43) + "="
	tests := []struct {
		name   string
		header func(valid, other string) string
		status int
	}{
		{"bogus then valid", func(valid, _ string) string { return bogus + " " + valid }, 200},
		{"valid then bogus", func(valid, _ string) string { return valid + " " + bogus }, 200},
		{"unknown secret's then valid", func(valid, other string) string { return other + " " + valid }, 200},
		{"unversioned and v2 then valid", func(valid, _ string) string {
			return strings.TrimPrefix(valid, "v1,") + " v2," + strings.TrimPrefix(valid, "v1,") + " " + valid
		}, 200},
		{"two, neither valid", func(_, other string) string { return bogus + " " + other }, 401},
		{"valid one as v2 only", func(valid, _ string) string { return "v2," + strings.TrimPrefix(valid, "v1,") }, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			id := newID()
			req := f.signedRequest(t, routeWebhooks, testSecret, id, testNow, body)
			other := signature(t, unknownSecret, id, testNow, body)
			req.Header.Set("Svix-Signature", tt.header(req.Header.Get("Svix-Signature"), other))
			if got := send(t, req); got.status != tt.status {
				t.Errorf("status %d (%s), want %d", got.status, got.code, tt.status)
			}
		})
	}
}

func TestWebhookHeaderNames(t *testing.T) {
	t.Parallel()
	body := readFile(t, "user.created.json")
	tests := []struct {
		name   string
		rename func(h http.Header)
	}{
		{"webhook-* only", func(h http.Header) {
			for _, n := range []string{"Id", "Timestamp", "Signature"} {
				move(h, "Svix-"+n, "Webhook-"+n)
			}
		}},
		{"incomplete svix-* beside complete webhook-*", func(h http.Header) {
			for _, n := range []string{"Id", "Timestamp", "Signature"} {
				h.Set("Webhook-"+n, h.Get("Svix-"+n))
			}
			h.Del("Svix-Signature")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			req := f.request(t, routeWebhooks, body)
			id, ts, sig := req.Header.Get("Svix-Id"), req.Header.Get("Svix-Timestamp"), req.Header.Get("Svix-Signature")
			tt.rename(req.Header)
			got := send(t, req)
			if got.status != 200 || got.ack.ID != id {
				t.Fatalf("answer %+v, want 200 for %s", got, id)
			}
			// The stream carries them under the contract's Svix-* names.
			m := f.stored(t, 1)
			want := map[string]string{"Nats-Msg-Id": id, "Svix-Id": id, "Svix-Timestamp": ts, "Svix-Signature": sig}
			for k, v := range want {
				if got := m.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestNewVerifier(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		secrets []string
		wantErr string
	}{
		{"one", []string{testSecret}, ""},
		{"two, spaces around", []string{" " + rotatedSecret, testSecret + " "}, ""},
		{"none", nil, "CLERK_WEBHOOK_SECRET: no secret"},
		{"no prefix", []string{strings.TrimPrefix(testSecret, "whsec_")}, "CLERK_WEBHOOK_SECRET: secret 1 of 1 does not start with whsec_"},
		{"not base64", []string{testSecret, "whsec_not*base64"}, "CLERK_WEBHOOK_SECRET: secret 2 of 2 is not whsec_ followed by base64"},
		{"empty after the prefix", []string{"whsec_"}, "CLERK_WEBHOOK_SECRET: secret 1 of 1 is not whsec_ followed by base64"},
		{"empty entry", []string{testSecret, ""}, "CLERK_WEBHOOK_SECRET: secret 2 of 2 does not start with whsec_"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := newVerifier(tt.secrets)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.wantErr {
				t.Errorf("error %q, want %q", got, tt.wantErr)
			}
		})
	}
}
