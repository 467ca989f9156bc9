// Package sessiontest plays Clerk for tests: an RSA signing key, its JWKS served on an
// httptest.Server (counting fetches, able to add and rotate keys or to hang), and Mint to sign
// session tokens, hostile ones included. Only tests may import it.
package sessiontest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Default claims of the tokens Claims builds.
const (
	IssuerURL       = "https://clerk.clerksync.test"
	AuthorizedParty = "https://app.clerksync.test"
)

// Key is a signing key and its kid.
type Key struct {
	ID      string
	Private *rsa.PrivateKey
}

// Public returns the key's public half.
func (k *Key) Public() *rsa.PublicKey { return &k.Private.PublicKey }

var keyCounter atomic.Int64

// NewKey generates a key that no issuer publishes (a foreign key, until AddKey publishes it).
func NewKey(t testing.TB) *Key {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("sessiontest: generating key: %v", err)
	}
	return &Key{ID: fmt.Sprintf("ins_test_%d", keyCounter.Add(1)), Private: priv}
}

// Issuer is a fake Clerk instance.
type Issuer struct {
	t       testing.TB
	server  *httptest.Server
	fetches atomic.Int64
	hanging atomic.Int64

	mu        sync.Mutex
	published []*Key
	signing   *Key
	hang      chan struct{} // non-nil while JWKS requests hang; closed to release them
	fail      bool          // answer JWKS requests with 500
}

// NewIssuer starts a fake Clerk instance with one published signing key. Its server stops when
// the test ends.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	i := &Issuer{t: t}
	i.signing = NewKey(t)
	i.published = []*Key{i.signing}
	i.server = httptest.NewServer(http.HandlerFunc(i.serveJWKS))
	t.Cleanup(i.server.Close)
	t.Cleanup(func() { i.Release() }) // runs before Close: a hanging request must end first
	return i
}

// JWKSURL is the URL the issuer serves its JWKS on.
func (i *Issuer) JWKSURL() string { return i.server.URL + "/.well-known/jwks.json" }

// Fetches is how many JWKS requests the issuer received.
func (i *Issuer) Fetches() int64 { return i.fetches.Load() }

// Hanging is how many JWKS requests are hanging right now.
func (i *Issuer) Hanging() int64 { return i.hanging.Load() }

// Key is the key tokens are signed with.
func (i *Issuer) Key() *Key {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.signing
}

// AddKey publishes a new key in the JWKS, or k when given, without signing with it.
func (i *Issuer) AddKey(k *Key) *Key {
	if k == nil {
		k = NewKey(i.t)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.published = append(i.published, k)
	return k
}

// Rotate publishes a new key and signs with it from now on; the old key stays published.
func (i *Issuer) Rotate() *Key {
	k := i.AddKey(nil)
	i.mu.Lock()
	defer i.mu.Unlock()
	i.signing = k
	return k
}

// Revoke removes k from the JWKS (tokens keep being signed with the current key).
func (i *Issuer) Revoke(k *Key) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.published = slices.DeleteFunc(i.published, func(p *Key) bool { return p == k })
}

// Fail makes the JWKS endpoint answer 500 (true) or the key set again (false).
func (i *Issuer) Fail(fail bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.fail = fail
}

// Hang makes JWKS requests block until Release (or the test's end).
func (i *Issuer) Hang() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.hang == nil {
		i.hang = make(chan struct{})
	}
}

// Release ends Hang: hanging requests are answered, later ones too.
func (i *Issuer) Release() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.hang != nil {
		close(i.hang)
		i.hang = nil
	}
}

// PublicKeyPEM is the signing key as Clerk's dashboard shows it (CLERK_JWT_KEY).
func (i *Issuer) PublicKeyPEM() string { return PublicKeyPEM(i.t, i.Key().Public()) }

// PublicKeyPEM encodes key as a PKIX "PUBLIC KEY" PEM block.
func PublicKeyPEM(t testing.TB, key *rsa.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		t.Fatalf("sessiontest: marshalling public key: %v", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func (i *Issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	i.fetches.Add(1)
	i.mu.Lock()
	hang, fail := i.hang, i.fail
	keys := make([]map[string]string, 0, len(i.published))
	for _, k := range i.published {
		keys = append(keys, JWK(k))
	}
	i.mu.Unlock()
	if hang != nil {
		i.hanging.Add(1)
		select {
		case <-hang:
		case <-r.Context().Done():
		}
		i.hanging.Add(-1)
	}
	if fail {
		http.Error(w, "failing on purpose", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
}

// JWK is k's public half as Clerk's JWKS lists it.
func JWK(k *Key) map[string]string {
	pub := k.Public()
	return map[string]string{
		"use": "sig",
		"kty": "RSA",
		"kid": k.ID,
		"alg": "RS256",
		"n":   base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e":   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}
}

// Claims returns the claims of a valid session token for the Clerk user sub, issued now and
// valid for a minute like Clerk's. Change or delete entries to make it invalid.
func Claims(sub string) jwt.MapClaims { return ClaimsAt(sub, time.Now()) }

// ClaimsAt is Claims issued at now, for a verifier whose clock is pinned there.
func ClaimsAt(sub string, now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"azp": AuthorizedParty,
		"exp": now.Add(time.Minute).Unix(),
		"iat": now.Unix(),
		"iss": IssuerURL,
		"nbf": now.Add(-10 * time.Second).Unix(),
		"sid": "sess_" + sub,
		"sub": sub,
		"v":   2,
	}
}

// Token mints a valid session token for sub.
func (i *Issuer) Token(sub string) string { return i.Mint(Claims(sub)) }

// MintOption changes how Mint signs.
type MintOption func(*mint)

type mint struct {
	method jwt.SigningMethod
	key    any
	kid    string
	header []headerParam // applied last, in order
}

type headerParam struct {
	name  string
	value any
}

// WithKey signs with k (RS256) and names it in kid.
func WithKey(k *Key) MintOption {
	return func(m *mint) { m.method, m.key, m.kid = jwt.SigningMethodRS256, k.Private, k.ID }
}

// WithMethod signs with method and key (an HMAC secret, an ECDSA key, …); alg follows.
func WithMethod(method jwt.SigningMethod, key any) MintOption {
	return func(m *mint) { m.method, m.key = method, key }
}

// WithHeader sets a header parameter, or deletes it when value is nil. It applies after
// everything else, so it can also lie about alg.
func WithHeader(name string, value any) MintOption {
	return func(m *mint) { m.header = append(m.header, headerParam{name, value}) }
}

// Mint signs claims with the issuer's current key (RS256, its kid and typ JWT in the header),
// as changed by opts.
func (i *Issuer) Mint(claims jwt.MapClaims, opts ...MintOption) string {
	i.t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		i.t.Fatalf("sessiontest: encoding claims: %v", err)
	}
	return i.MintRaw(payload, opts...)
}

// MintRaw signs payload byte for byte as the token's claims, as Mint does, for payloads no map
// can hold: a member twice, members in a chosen order, an escaped name, or not an object at all.
func (i *Issuer) MintRaw(payload []byte, opts ...MintOption) string {
	i.t.Helper()
	k := i.Key()
	m := &mint{method: jwt.SigningMethodRS256, key: k.Private, kid: k.ID}
	for _, opt := range opts {
		opt(m)
	}
	header := map[string]any{"alg": m.method.Alg(), "kid": m.kid, "typ": "JWT"}
	for _, p := range m.header {
		if p.value == nil {
			delete(header, p.name)
		} else {
			header[p.name] = p.value
		}
	}
	h, err := json.Marshal(header)
	if err != nil {
		i.t.Fatalf("sessiontest: encoding header: %v", err)
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(h) + "." + enc.EncodeToString(payload)
	sig, err := m.method.Sign(signing, m.key)
	if err != nil {
		i.t.Fatalf("sessiontest: signing token: %v", err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

// Encode assembles a token from a header, claims and a raw signature, for tokens no library
// would sign (alg "None", a stripped signature).
func Encode(t testing.TB, header, claims map[string]any, signature []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatalf("sessiontest: encoding header: %v", err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatalf("sessiontest: encoding claims: %v", err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(c) + "." + enc.EncodeToString(signature)
}
