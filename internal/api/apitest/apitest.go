// Package apitest holds the api's hostile-token table: every way a caller may try to get past
// the session check of GET /auth/me, each with the answer the contract gives. The rows are
// defined here once so that the same table runs against the handler in-process
// (internal/api's TestAttackTable) and against the built binary over real HTTP (cmd/api's
// TestAttackTableBinary). Only tests may import it; it knows nothing of the api's internals.
package apitest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/clerksync/clerksync/internal/session/sessiontest"
)

// SessionCookie is the cookie Clerk's frontend SDKs keep the session token in.
const SessionCookie = "__session"

// The WWW-Authenticate challenges of a refused request (RFC 6750 §3.1).
const (
	ChallengeInvalidToken = `Bearer error="invalid_token"`
	ChallengeMissingToken = "Bearer"
)

// Leeway is the clock skew the rows assume the api allows for exp, nbf and iat (JWT_LEEWAY's
// default).
const Leeway = 5 * time.Second

// Attack is one request to GET /auth/me and the answer it must get.
type Attack struct {
	Name string

	// How the token travels. All empty: the request carries no credentials at all.
	Bearer        string // Authorization: Bearer <Bearer>
	Authorization string // a raw Authorization header, sent instead of Bearer
	Cookie        string // the __session cookie

	// The answer: status, the JSON error code, and the WWW-Authenticate challenge ("" for none).
	Status    int
	Code      string
	Challenge string

	// plain are values hidden inside the token (a hostile kid) that must not reach a log either.
	plain []string
}

// Refused reports whether the api must refuse the row with 401, before touching the database.
// The other rows carry a valid token for a user the database does not hold: the request reaches
// the database and gets 404 user_not_synced. (Some of them also name Impostor, whom the database
// does hold, under another spelling of sub.)
func (a Attack) Refused() bool { return a.Status == http.StatusUnauthorized }

// Header is the request header that carries the row's credentials.
func (a Attack) Header() http.Header {
	h := http.Header{}
	switch {
	case a.Authorization != "":
		h.Set("Authorization", a.Authorization)
	case a.Bearer != "":
		h.Set("Authorization", "Bearer "+a.Bearer)
	}
	if a.Cookie != "" {
		// Set raw: the value is sent byte for byte, as an attacker would, unsanitised.
		h.Set("Cookie", SessionCookie+"="+a.Cookie)
	}
	return h
}

// material is what of the row must never appear in a log: each token whole, each of its
// segments (the signature above all), and the values hidden inside it.
func (a Attack) material() []string {
	var m []string
	for _, tok := range []string{a.Bearer, a.Authorization, a.Cookie} {
		if len(tok) >= 8 {
			m = append(m, tok)
		}
		for seg := range strings.SplitSeq(tok, ".") {
			if len(seg) >= 16 && seg != tok {
				m = append(m, seg)
			}
		}
	}
	return append(m, a.plain...)
}

// Table is the hostile-token table and what its rows point at.
type Table struct {
	Attacks []Attack
	// Attacker serves the attacker's JWKS at the URLs the jku and x5u rows name; the api must
	// never fetch it.
	Attacker *Attacker
	// Minted is when the last token was minted: against a running clock, the rows hold for 3s
	// from then (see Attacks).
	Minted time.Time
}

// Leaks returns the names of the rows whose token material (or a value hidden in the token)
// appears in output: a log must hold none.
func (tb *Table) Leaks(output string) []string {
	var names []string
	for _, a := range tb.Attacks {
		for _, m := range a.material() {
			if strings.Contains(output, m) {
				names = append(names, a.Name)
				break
			}
		}
	}
	return names
}

// Attacker is a key no issuer publishes and a server handing it out as a JWKS, counting every
// request.
type Attacker struct {
	Key    *sessiontest.Key
	server *httptest.Server
	hits   atomic.Int64
}

// NewAttacker starts an attacker's JWKS server; it stops when the test ends.
func NewAttacker(t testing.TB) *Attacker {
	t.Helper()
	a := &Attacker{Key: sessiontest.NewKey(t)}
	a.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		a.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{sessiontest.JWK(a.Key)}})
	}))
	t.Cleanup(a.server.Close)
	return a
}

// URL is the attacker server's base URL.
func (a *Attacker) URL() string { return a.server.URL }

// Hits is how many requests the attacker's server received.
func (a *Attacker) Hits() int64 { return a.hits.Load() }

// Attacks builds the table: tokens from iss (or forged against it) for a user the database does
// not hold, for an api whose database holds Impostor (see SyncUser) and that checks what
// production checks — CLERK_ISSUER =
// sessiontest.IssuerURL, CLERK_AUTHORIZED_PARTIES = sessiontest.AuthorizedParty, and Leeway. The
// tokens are issued at now(), read after the slow part (generating keys).
//
// Against a verifier whose clock is pinned at now() the rows hold forever. Against a running
// clock they hold for 3s after Table.Minted: the "expired within leeway" row, minted last at a
// fresh reading of now(), expired 1–2s before it, within the 5s leeway. Build the table just
// before sending it. Every other row sits at least 50s away from a boundary.
func Attacks(t testing.TB, iss *sessiontest.Issuer, now func() time.Time) *Table {
	t.Helper()
	key := iss.Key()
	attacker := NewAttacker(t)
	evil := attacker.URL()

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	issued := now()
	const sub = "user_2victim"
	base := func() jwt.MapClaims { return sessiontest.ClaimsAt(sub, issued) }
	claims := func(change func(jwt.MapClaims)) jwt.MapClaims {
		c := base()
		change(c)
		return c
	}
	valid := iss.Mint(base())
	parts := strings.Split(valid, ".")
	foreign := iss.Mint(base(), sessiontest.WithMethod(jwt.SigningMethodRS256, attacker.Key.Private))

	// A flipped payload bit: sub "user_2victim" becomes "user_2victio".
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	i := strings.Index(string(payload), sub) + len(sub) - 1
	payload[i] ^= 0x02
	flipped := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]

	const (
		traversal = "../../../../etc/passwd"
		sqlKID    = "' OR '1'='1'; DROP TABLE users; --"
		forged    = "level=ERROR" // a log line forged through a kid with a newline
	)
	mint := iss.Mint
	with := sessiontest.WithHeader
	invalid := func(name, bearer string) Attack {
		return Attack{Name: name, Bearer: bearer}
	}
	accepted := func(name, bearer string) Attack {
		return Attack{Name: name, Bearer: bearer, Status: http.StatusNotFound, Code: "user_not_synced"}
	}
	// then signs c with members appended after its own: json.Marshal sorts a map's names, so
	// "SUB" would come before "sub", and a forger puts the variant last, where a case-insensitive,
	// last-wins reading of the claims would let it win.
	then := func(c jwt.MapClaims, members string) string {
		t.Helper()
		payload, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("apitest: %v", err)
		}
		return iss.MintRaw(append(payload[:len(payload)-1], ","+members+"}"...))
	}
	impostor := fmt.Sprintf("%q", Impostor)
	attacks := []Attack{
		invalid("alg none", mint(base(), sessiontest.WithMethod(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType))),
		invalid("alg None", sessiontest.Encode(t, map[string]any{"alg": "None", "typ": "JWT", "kid": key.ID}, base(), nil)),
		invalid("alg none with our signature", sessiontest.Encode(t, map[string]any{"alg": "none", "kid": key.ID}, base(), []byte("sig"))),
		invalid("HS256 signed with the PEM public key", mint(base(), sessiontest.WithMethod(jwt.SigningMethodHS256, pubPEM))),
		invalid("HS256 signed with the DER public key", mint(base(), sessiontest.WithMethod(jwt.SigningMethodHS256, pubDER))),
		invalid("RS384", mint(base(), sessiontest.WithMethod(jwt.SigningMethodRS384, key.Private))),
		invalid("PS256", mint(base(), sessiontest.WithMethod(jwt.SigningMethodPS256, key.Private))),
		invalid("ES256", mint(base(), sessiontest.WithMethod(jwt.SigningMethodES256, ecKey))),
		invalid("RS256 header over a PS256 signature", mint(base(), sessiontest.WithMethod(jwt.SigningMethodPS256, key.Private), with("alg", "RS256"))),
		invalid("stripped signature", parts[0]+"."+parts[1]+"."),
		invalid("no signature segment", parts[0]+"."+parts[1]),
		invalid("foreign signature", parts[0]+"."+parts[1]+"."+strings.Split(foreign, ".")[2]),
		invalid("signed by a foreign key under our kid", foreign),
		invalid("flipped payload bit", flipped),
		invalid("padded signature", valid+"="),
		invalid("missing kid", mint(base(), with("kid", nil))),
		invalid("unknown kid", mint(base(), with("kid", "ins_unknown"))),
		{Name: "kid path traversal", Bearer: mint(base(), with("kid", traversal)), plain: []string{traversal}},
		{Name: "kid SQL", Bearer: mint(base(), with("kid", sqlKID)), plain: []string{"DROP TABLE"}},
		invalid("kid huge", mint(base(), with("kid", strings.Repeat("A", 6000)))),
		{Name: "kid NUL and newline", Bearer: mint(base(), with("kid", key.ID+"\x00\n"+forged)), plain: []string{forged}},
		invalid("kid an object", mint(base(), with("kid", map[string]any{"$ne": ""}))),
		invalid("kid a list", mint(base(), with("kid", []string{key.ID}))),
		invalid("jku to the attacker", mint(base(), sessiontest.WithKey(attacker.Key), with("jku", evil+"/jwks.json"))),
		invalid("jku on our own key", mint(base(), with("jku", evil+"/jwks.json"))),
		invalid("x5u to the attacker", mint(base(), sessiontest.WithKey(attacker.Key), with("x5u", evil+"/cert.pem"))),
		invalid("jwk embedded", mint(base(), sessiontest.WithKey(attacker.Key), with("jwk", sessiontest.JWK(attacker.Key)))),
		invalid("jwk embedded without kid", mint(base(), sessiontest.WithKey(attacker.Key), with("kid", nil), with("jwk", sessiontest.JWK(attacker.Key)))),
		invalid("crit", mint(base(), with("crit", []string{"exp"}))),
		invalid("crit empty", mint(base(), with("crit", []string{}))),
		invalid("typ at+jwt", mint(base(), with("typ", "at+jwt"))),
		invalid("typ JWE", mint(base(), with("typ", "JWE"))),
		invalid("exp missing", mint(claims(func(c jwt.MapClaims) { delete(c, "exp") }))),
		invalid("exp not a number", mint(claims(func(c jwt.MapClaims) { c["exp"] = "never" }))),
		invalid("expired beyond leeway", mint(claims(func(c jwt.MapClaims) { c["exp"] = issued.Add(-time.Minute).Unix() }))),
		accepted("expired within leeway", ""), // minted last, below
		invalid("nbf in the future", mint(claims(func(c jwt.MapClaims) { c["nbf"] = issued.Add(time.Minute).Unix() }))),
		accepted("nbf within leeway", mint(claims(func(c jwt.MapClaims) { c["nbf"] = issued.Add(2 * time.Second).Unix() }))),
		invalid("iat in the future", mint(claims(func(c jwt.MapClaims) { c["iat"] = issued.Add(time.Minute).Unix() }))),
		invalid("another issuer", mint(claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.clerk.accounts.dev" }))),
		invalid("issuer missing", mint(claims(func(c jwt.MapClaims) { delete(c, "iss") }))),
		invalid("azp missing", mint(claims(func(c jwt.MapClaims) { delete(c, "azp") }))),
		invalid("azp not listed", mint(claims(func(c jwt.MapClaims) { c["azp"] = "https://evil.example.com" }))),
		invalid("sub missing", mint(claims(func(c jwt.MapClaims) { delete(c, "sub") }))),
		invalid("sub empty", mint(claims(func(c jwt.MapClaims) { c["sub"] = "" }))),
		invalid("sub not a string", mint(claims(func(c jwt.MapClaims) { c["sub"] = 42 }))),
		invalid("sts pending", mint(claims(func(c jwt.MapClaims) { c["sts"] = "pending" }))),
		accepted("sts active", mint(claims(func(c jwt.MapClaims) { c["sts"] = "active" }))),
		// A claim spelled otherwise is another claim: whatever it says, the token is the victim's,
		// and the impostor (whom the database holds) is never answered for.
		accepted("SUB after sub", then(base(), `"SUB":`+impostor)),
		accepted("Sub after sub", then(base(), `"Sub":`+impostor)),
		invalid("SUB without sub", mint(claims(func(c jwt.MapClaims) { delete(c, "sub"); c["SUB"] = Impostor }))),
		invalid("sub twice", then(base(), `"sub":`+impostor)),
		invalid("sub null", mint(claims(func(c jwt.MapClaims) { c["sub"] = nil }))),
		invalid("Exp without exp", mint(claims(func(c jwt.MapClaims) { delete(c, "exp"); c["Exp"] = issued.Add(time.Minute).Unix() }))),
		invalid("exp a digit string", mint(claims(func(c jwt.MapClaims) { c["exp"] = strconv.FormatInt(issued.Add(time.Minute).Unix(), 10) }))),
		invalid("nbf null", mint(claims(func(c jwt.MapClaims) { c["nbf"] = nil }))),
		accepted("NBF in the future without nbf", mint(claims(func(c jwt.MapClaims) { delete(c, "nbf"); c["NBF"] = issued.Add(time.Minute).Unix() }))),
		accepted("IAT in the future without iat", mint(claims(func(c jwt.MapClaims) { delete(c, "iat"); c["IAT"] = issued.Add(time.Minute).Unix() }))),
		invalid("STS active after sts pending", then(claims(func(c jwt.MapClaims) { c["sts"] = "pending" }), `"STS":"active"`)),
		invalid("AZP listed after azp not listed", then(claims(func(c jwt.MapClaims) { c["azp"] = "https://evil.example" }), fmt.Sprintf(`"AZP":%q`, sessiontest.AuthorizedParty))),
		invalid("ISS right after iss wrong", then(claims(func(c jwt.MapClaims) { c["iss"] = "https://wrong.example" }), fmt.Sprintf(`"ISS":%q`, sessiontest.IssuerURL))),
		invalid("over 8 KiB", mint(claims(func(c jwt.MapClaims) { c["pad"] = strings.Repeat("x", 8<<10) }))),
		invalid("megabyte of dots", strings.Repeat(".", 1<<20)),
		{Name: "megabyte of dots in the cookie", Cookie: strings.Repeat(".", 1<<20)},
		invalid("garbage", "not-a-token"),
		{Name: "invalid header, valid cookie: the header wins", Bearer: "garbage", Cookie: valid},
		{Name: "bad cookie", Cookie: flipped},
		{Name: "no token", Status: http.StatusUnauthorized, Code: "missing_token", Challenge: ChallengeMissingToken},
	}
	// The one row that decays against a running clock is minted last, at a fresh reading of it,
	// so that minting the others does not eat into its 3s.
	decaying := slices.IndexFunc(attacks, func(a Attack) bool { return a.Name == "expired within leeway" })
	minted := now()
	attacks[decaying].Bearer = mint(claims(func(c jwt.MapClaims) { c["exp"] = minted.Add(-time.Second).Unix() }))
	for i := range attacks {
		if attacks[i].Status == 0 {
			attacks[i].Status, attacks[i].Code, attacks[i].Challenge = http.StatusUnauthorized, "invalid_token", ChallengeInvalidToken
		}
	}
	return &Table{Attacks: attacks, Attacker: attacker, Minted: minted}
}

// LockedBuffer collects a service's log output while the test reads it.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
