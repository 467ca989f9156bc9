package ingest

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	svix "github.com/svix/svix-webhooks/go"
)

const (
	// tolerance is how far a webhook's timestamp may be from our clock, either way (Svix's own).
	tolerance = 5 * time.Minute
	// maxIDLen bounds the svix-id, which becomes the Nats-Msg-Id.
	maxIDLen = 255
	// maxSignatureHeader bounds the signature header. Svix sends one "v1,<44 base64 bytes>" per
	// active secret (two during a rotation), so 8 KiB is generous; a longer header is refused
	// before any HMAC is computed. The svix library compares against every v1 entry of the
	// header, once per secret, so without this bound one request could make it split and compare
	// thousands of entries per configured secret.
	maxSignatureHeader = 8 << 10
	secretPrefix       = "whsec_"
)

// signedHeaders are a webhook's id, timestamp and signatures, whichever names carried them.
type signedHeaders struct {
	id        string
	timestamp string
	signature string
	ts        time.Time
}

// readSignedHeaders takes the svix-* headers when all three are present, else the webhook-*
// (Standard Webhooks) ones, as the svix library does, and checks the id and timestamp.
func readSignedHeaders(h http.Header) (signedHeaders, error) {
	for _, prefix := range [...]string{"Svix-", "Webhook-"} {
		s := signedHeaders{
			id:        h.Get(prefix + "Id"),
			timestamp: h.Get(prefix + "Timestamp"),
			signature: h.Get(prefix + "Signature"),
		}
		if s.id == "" || s.timestamp == "" || s.signature == "" {
			continue
		}
		// Spaces at either end cannot come over HTTP, and NATS would trim them from the
		// Nats-Msg-Id, deduplicating on another id than the one answered.
		if len(s.id) > maxIDLen || !printableASCII(s.id) || s.id != strings.TrimSpace(s.id) {
			return signedHeaders{}, fmt.Errorf("%w: id is not 1 to %d printable ASCII characters", errInvalidHeaders, maxIDLen)
		}
		// The same parse as the svix library's, so both agree on what the timestamp is.
		sec, err := strconv.ParseInt(s.timestamp, 10, 64)
		if err != nil {
			return signedHeaders{}, fmt.Errorf("%w: timestamp is not an integer", errInvalidHeaders)
		}
		s.ts = time.Unix(sec, 0)
		return s, nil
	}
	return signedHeaders{}, errMissingHeaders
}

// printableASCII reports whether s is made of bytes 0x20–0x7E only.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// verifier checks Svix signatures against every configured secret.
//
// The signature is checked by the svix library (VerifyIgnoringTimestamp); the ±5 min tolerance is
// checked here, with the library's exact rule, against an injected clock: the library reads
// time.Now itself, and an injected clock is what lets the tests replay Svix's known-answer vector
// through the whole handler and pin the tolerance to the second.
type verifier struct {
	hooks []*svix.Webhook
}

func newVerifier(secrets []string) (*verifier, error) {
	if len(secrets) == 0 {
		return nil, fmt.Errorf("CLERK_WEBHOOK_SECRET: no secret")
	}
	v := &verifier{}
	for i, s := range secrets {
		// Never put the secret in an error: it would end up in a log.
		s = strings.TrimSpace(s)
		if !strings.HasPrefix(s, secretPrefix) {
			return nil, fmt.Errorf("CLERK_WEBHOOK_SECRET: secret %d of %d does not start with %s", i+1, len(secrets), secretPrefix)
		}
		wh, err := svix.NewWebhook(s)
		if err != nil {
			return nil, fmt.Errorf("CLERK_WEBHOOK_SECRET: secret %d of %d is not %s followed by base64", i+1, len(secrets), secretPrefix)
		}
		v.hooks = append(v.hooks, wh)
	}
	return v, nil
}

// verify returns the index of the first secret whose signature body carries, or an error
// wrapping errInvalidSignature. It never decodes or decompresses body: what is verified is what
// is stored.
func (v *verifier) verify(s signedHeaders, body []byte, now time.Time) (int, error) {
	if len(s.signature) > maxSignatureHeader {
		return -1, fmt.Errorf("%w: signature header over %d bytes", errInvalidSignature, maxSignatureHeader)
	}
	// Signatures are base64; anything else cannot match, and must not reach a NATS header.
	if !printableASCII(s.signature) {
		return -1, fmt.Errorf("%w: signature header is not printable ASCII", errInvalidSignature)
	}
	// The svix library's rule, to the second.
	if now.Sub(s.ts) > tolerance {
		return -1, fmt.Errorf("%w: timestamp too old", errInvalidSignature)
	}
	if s.ts.Unix() > now.Add(tolerance).Unix() {
		return -1, fmt.Errorf("%w: timestamp too new", errInvalidSignature)
	}
	h := http.Header{}
	h.Set("Svix-Id", s.id)
	h.Set("Svix-Timestamp", s.timestamp)
	h.Set("Svix-Signature", s.signature)
	for i, wh := range v.hooks {
		if wh.VerifyIgnoringTimestamp(body, h) == nil {
			return i, nil
		}
	}
	return -1, fmt.Errorf("%w: no signature matches any secret", errInvalidSignature)
}
