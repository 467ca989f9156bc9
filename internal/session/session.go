// Package session verifies Clerk session tokens — the JWTs a Clerk frontend sends as a Bearer
// token or in the __session cookie — and says whose they are.
//
// Keys come only from the configured source: the Clerk instance's JWKS URL or a PEM public key.
// Nothing inside a token (jku, x5u, jwk, x5c) ever decides where a key comes from. The package
// knows nothing of HTTP routes or the database: a caller hands it a token string and gets the
// verified claims, or an *Error whose Reason says why not. No part of a token ever appears in its
// errors or logs.
package session

import (
	"cmp"
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxTokenBytes bounds a token's length. It is checked before any parsing, so a hostile token
// (a megabyte of dots, CVE-2025-30204's shape) costs a length comparison.
const MaxTokenBytes = 8 << 10

// maxKIDBytes bounds the kid header: Clerk's are about 30 bytes; a longer one is never looked up.
const maxKIDBytes = 256

// Defaults for Options left zero.
const (
	DefaultCacheTTL           = time.Hour
	DefaultFetchTimeout       = 5 * time.Second
	DefaultUnknownKeyInterval = 30 * time.Second
)

// Reason says why a token was refused. Reasons are few and fixed, so they can label metrics.
type Reason string

// The reasons a token is refused.
const (
	ReasonTooLarge        Reason = "too_large"        // longer than MaxTokenBytes
	ReasonMalformed       Reason = "malformed"        // not base64url JSON in three segments; a claim mistyped or twice
	ReasonAlgorithm       Reason = "algorithm"        // alg is not RS256
	ReasonHeader          Reason = "header"           // typ not JWT, crit, or a key-locating header
	ReasonUnknownKey      Reason = "unknown_key"      // kid missing, or not in the key set
	ReasonSignature       Reason = "signature"        // the signature does not verify
	ReasonMissingClaim    Reason = "missing_claim"    // exp or sub absent
	ReasonExpired         Reason = "expired"          // exp passed (beyond the leeway)
	ReasonNotYetValid     Reason = "not_yet_valid"    // nbf in the future (beyond the leeway)
	ReasonIssuedInFuture  Reason = "issued_in_future" // iat in the future (beyond the leeway)
	ReasonIssuer          Reason = "issuer"           // iss is not the configured issuer
	ReasonAuthorizedParty Reason = "authorized_party" // azp absent or not an authorized party
	ReasonPendingSession  Reason = "pending_session"  // sts is "pending": the session is not complete
)

// Reasons lists every Reason, for initialising metrics.
var Reasons = []Reason{
	ReasonTooLarge, ReasonMalformed, ReasonAlgorithm, ReasonHeader, ReasonUnknownKey,
	ReasonSignature, ReasonMissingClaim, ReasonExpired, ReasonNotYetValid, ReasonIssuedInFuture,
	ReasonIssuer, ReasonAuthorizedParty, ReasonPendingSession,
}

// Error is a refused token. Its message names the reason and what was wrong, never any part of
// the token.
type Error struct {
	Reason Reason
	detail string
}

func (e *Error) Error() string {
	return "session token refused (" + string(e.Reason) + "): " + e.detail
}

func refuse(reason Reason, format string, args ...any) *Error {
	return &Error{Reason: reason, detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the reason err refused a token, or "" when err is not an *Error.
func ReasonOf(err error) Reason {
	if se, ok := errors.AsType[*Error](err); ok {
		return se.Reason
	}
	return ""
}

// Options configures a Verifier. One of JWKSURL and PublicKey is required; PublicKey wins when
// both are set, as in Clerk's own SDKs, and then nothing is fetched.
type Options struct {
	// JWKSURL is the Clerk instance's JWKS, e.g. https://<instance>.clerk.accounts.dev/.well-known/jwks.json.
	JWKSURL string
	// PublicKey is the instance's PEM public key as Clerk's dashboard shows it, with or without
	// the BEGIN/END lines.
	PublicKey string
	// CacheTTL is how often the JWKS is fetched again (default DefaultCacheTTL).
	CacheTTL time.Duration
	// FetchTimeout bounds one JWKS fetch (default DefaultFetchTimeout).
	FetchTimeout time.Duration
	// UnknownKeyInterval is the least time between two fetches caused by tokens with an unknown
	// kid (default DefaultUnknownKeyInterval).
	UnknownKeyInterval time.Duration
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway time.Duration
	// Issuer, when set, is the only iss accepted.
	Issuer string
	// AuthorizedParties, when not empty, are the only azp values accepted, and azp is required.
	AuthorizedParties []string
	// HTTPClient fetches the JWKS (default: a client with FetchTimeout).
	HTTPClient *http.Client
	// Logger receives JWKS refresh failures (default: discarded).
	Logger *slog.Logger
	// OnRefresh, when set, is called after every JWKS fetch with its outcome.
	OnRefresh func(err error)
	// CacheSize is how many verified tokens are remembered, so a token sent again skips the
	// signature check (never the claim checks) until its exp (default DefaultCacheSize; negative
	// disables the cache).
	CacheSize int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Verifier verifies Clerk session tokens. It is safe for concurrent use.
type Verifier struct {
	parser    *jwt.Parser
	validator *jwt.Validator
	issuer    string
	parties   map[string]bool
	publicKey *rsa.PublicKey // when verifying with a PEM key
	remote    *remoteKeys    // when verifying with the JWKS
	cache     *tokenCache    // nil when disabled
	now       func() time.Time
}

// New returns a Verifier. With a JWKS URL it starts fetching the key set in the background
// (Ready reports when it has one); Close stops that.
func New(opts Options) (*Verifier, error) {
	if opts.Leeway < 0 {
		return nil, errors.New("session: negative leeway")
	}
	validatorOpts := []jwt.ParserOption{
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(opts.Leeway),
	}
	v := &Verifier{
		// Claims are validated apart from the signature (checkClaims), so that a cache of
		// verified signatures can sit between the two and every claim check still runs.
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
			jwt.WithStrictDecoding(),
			jwt.WithoutClaimsValidation(),
		),
		issuer: opts.Issuer,
		cache:  newTokenCache(cmp.Or(opts.CacheSize, DefaultCacheSize)),
		now:    opts.Now,
	}
	if v.now == nil {
		v.now = time.Now
	}
	v.validator = jwt.NewValidator(append(validatorOpts, jwt.WithTimeFunc(v.now))...)
	for _, p := range opts.AuthorizedParties {
		if p = strings.TrimSpace(p); p != "" {
			if v.parties == nil {
				v.parties = make(map[string]bool)
			}
			v.parties[p] = true
		}
	}
	switch {
	case strings.TrimSpace(opts.PublicKey) != "":
		key, err := ParsePublicKey(opts.PublicKey)
		if err != nil {
			return nil, err
		}
		v.publicKey = key
	case opts.JWKSURL != "":
		remote, err := newRemoteKeys(opts, v.cache.clear)
		if err != nil {
			return nil, err
		}
		v.remote = remote
	default:
		return nil, errors.New("session: no key source: set a JWKS URL or a PEM public key")
	}
	return v, nil
}

// Close stops the background JWKS refresh and waits for it. Verify keeps working with the keys
// already fetched.
func (v *Verifier) Close() {
	if v.remote != nil {
		v.remote.close()
	}
}

// Ready reports whether the Verifier has keys to verify with: always with a PEM key, once the
// first JWKS fetch succeeded otherwise.
func (v *Verifier) Ready() error {
	if v.remote != nil && !v.remote.loaded.Load() {
		return errors.New("session: no JWKS fetched yet")
	}
	return nil
}

// Verify checks token and returns its claims, or an *Error saying why it was refused. A token
// with an unknown kid may wait for one JWKS fetch (bounded by the fetch timeout and ctx), never
// for a rate limiter: when such a fetch happened in the last UnknownKeyInterval it is refused at
// once.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	if len(token) > MaxTokenBytes {
		return nil, refuse(ReasonTooLarge, "token is %d bytes, more than %d", len(token), MaxTokenBytes)
	}
	claims, gen, cached := v.cache.get(token, v.now())
	if !cached {
		var err error
		if claims, err = v.verifySignature(ctx, token); err != nil {
			return nil, err
		}
	}
	if err := v.checkClaims(claims); err != nil {
		return nil, err
	}
	if !cached {
		v.cache.put(token, claims, gen, v.now())
	}
	return claims, nil
}

// verifySignature parses token and verifies its header and signature, not its claims.
func (v *Verifier) verifySignature(ctx context.Context, token string) (*Claims, error) {
	claims := new(Claims)
	tok, err := v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		return v.key(ctx, t)
	})
	if err != nil {
		return nil, classifyParseError(tok, err)
	}
	if !claims.decoded {
		// A payload of null never reaches UnmarshalJSON: encoding/json sets the parser's
		// interface to nil instead, and no error comes back.
		return nil, refuse(ReasonMalformed, "claims are not a JSON object")
	}
	return claims, nil
}

// key checks the header and returns the key the token must be signed with.
func (v *Verifier) key(ctx context.Context, t *jwt.Token) (any, error) {
	if err := checkHeader(t.Header); err != nil {
		return nil, err
	}
	if v.publicKey != nil {
		// Clerk's networkless verification: one key, whatever the kid says.
		return v.publicKey, nil
	}
	kid, ok := t.Header["kid"].(string)
	switch {
	case !ok || kid == "":
		return nil, refuse(ReasonUnknownKey, "token has no kid")
	case len(kid) > maxKIDBytes:
		return nil, refuse(ReasonUnknownKey, "kid is longer than %d bytes", maxKIDBytes)
	}
	return v.remote.key(ctx, t)
}

// checkHeader refuses the header parameters clerksync does not accept: Clerk sets alg, kid and
// typ "JWT" and nothing else.
func checkHeader(h map[string]any) error {
	if typ, ok := h["typ"]; ok && typ != "JWT" {
		return refuse(ReasonHeader, `typ is not "JWT"`)
	}
	if _, ok := h["crit"]; ok {
		return refuse(ReasonHeader, "crit header present")
	}
	// Keys come only from the configured source: a token naming or carrying its own key is
	// refused outright, so no code path can ever be tempted to follow it.
	for _, name := range []string{"jku", "x5u", "jwk", "x5c"} {
		if _, ok := h[name]; ok {
			return refuse(ReasonHeader, "%s header present", name)
		}
	}
	return nil
}

func classifyParseError(tok *jwt.Token, err error) error {
	if se, ok := errors.AsType[*Error](err); ok {
		return se
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return refuse(ReasonMalformed, "%v", err)
	case tok == nil || tok.Method == nil || tok.Method.Alg() != jwt.SigningMethodRS256.Alg():
		return refuse(ReasonAlgorithm, "alg is not RS256")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return refuse(ReasonSignature, "signature does not verify")
	default:
		return refuse(ReasonMalformed, "%v", err)
	}
}

// checkClaims validates the claims of a token whose signature verified.
func (v *Verifier) checkClaims(c *Claims) error {
	if err := v.validator.Validate(c); err != nil {
		switch {
		case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
			return refuse(ReasonMissingClaim, "%v", err)
		case errors.Is(err, jwt.ErrTokenExpired):
			return refuse(ReasonExpired, "token is expired")
		case errors.Is(err, jwt.ErrTokenNotValidYet):
			return refuse(ReasonNotYetValid, "nbf is in the future")
		case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
			return refuse(ReasonIssuedInFuture, "iat is in the future")
		default:
			return refuse(ReasonMalformed, "%v", err)
		}
	}
	if c.Subject == "" {
		return refuse(ReasonMissingClaim, "token has no sub")
	}
	if v.issuer != "" && c.Issuer != v.issuer {
		return refuse(ReasonIssuer, "iss is not the configured issuer")
	}
	if v.parties != nil && !v.parties[c.AuthorizedParty] {
		if c.AuthorizedParty == "" {
			return refuse(ReasonAuthorizedParty, "token has no azp")
		}
		return refuse(ReasonAuthorizedParty, "azp is not an authorized party")
	}
	if c.SessionStatus == "pending" {
		return refuse(ReasonPendingSession, "session is pending")
	}
	return nil
}
