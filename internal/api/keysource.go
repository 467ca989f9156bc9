package api

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/clerksync/clerksync/internal/clerkapi"
)

// keySource is where the api gets the keys that sign session tokens, from the first of the
// variables that is set: CLERK_JWT_KEY (a PEM key: no network), CLERK_JWKS_URL, then what Clerk's
// dashboard shows — CLERK_PUBLISHABLE_KEY (its Frontend API host gives the JWKS and the issuer)
// and CLERK_SECRET_KEY alone (the Backend API's GET /v1/jwks, with the key).
type keySource struct {
	name    string // the variable the keys come from, for the log line
	pem     string
	jwksURL string
	// issuer is the publishable key's, used unless CLERK_ISSUER is set.
	issuer string
	// secret, when set, is sent as a Bearer token with the JWKS request (the Backend API's).
	secret clerkapi.SecretKey
}

// errNoKeySource is the one line the api stops with when it has no way to verify tokens.
var errNoKeySource = errors.New("config: one of CLERK_JWKS_URL, CLERK_JWT_KEY, CLERK_PUBLISHABLE_KEY and CLERK_SECRET_KEY is required")

func (c Config) keySource() (keySource, error) {
	switch {
	case strings.TrimSpace(c.JWTKey) != "":
		return keySource{name: "CLERK_JWT_KEY", pem: c.JWTKey}, nil
	case strings.TrimSpace(c.JWKSURL) != "":
		return keySource{name: "CLERK_JWKS_URL", jwksURL: strings.TrimSpace(c.JWKSURL)}, nil
	case strings.TrimSpace(c.PublishableKey) != "":
		host, err := ParsePublishableKey(strings.TrimSpace(c.PublishableKey))
		if err != nil {
			return keySource{}, err
		}
		return keySource{name: "CLERK_PUBLISHABLE_KEY", jwksURL: "https://" + host + "/.well-known/jwks.json", issuer: "https://" + host}, nil
	case c.ClerkSecretKey != "":
		u, err := url.Parse(strings.TrimRight(c.ClerkAPIURL, "/") + "/v1/jwks")
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return keySource{}, fmt.Errorf("config: CLERK_API_URL %q: want an absolute http(s) URL", c.ClerkAPIURL)
		}
		return keySource{name: "CLERK_SECRET_KEY", jwksURL: u.String(), secret: c.ClerkSecretKey}, nil
	}
	return keySource{}, errNoKeySource
}

// ParsePublishableKey returns the Frontend API host a Clerk publishable key names: the key is
// pk_test_ or pk_live_ followed by the base64 of the host and a "$".
func ParsePublishableKey(key string) (string, error) {
	bad := func(why string) (string, error) {
		// The publishable key is public, but a malformed one may be a pasted secret: never echo it.
		return "", fmt.Errorf("config: CLERK_PUBLISHABLE_KEY: %s (want pk_test_ or pk_live_ followed by the base64 of the Frontend API host and a $, as Clerk's dashboard shows it)", why)
	}
	encoded, ok := strings.CutPrefix(key, "pk_test_")
	if !ok {
		if encoded, ok = strings.CutPrefix(key, "pk_live_"); !ok {
			return bad("not a publishable key")
		}
	}
	decoded, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		if decoded, err = base64.RawStdEncoding.DecodeString(encoded); err != nil {
			return bad("not base64")
		}
	}
	host, ok := strings.CutSuffix(string(decoded), "$")
	if !ok || host == "" {
		return bad("does not name a host")
	}
	if u, err := url.Parse("https://" + host); err != nil || u.Host != host || u.Path != "" || strings.ContainsAny(host, "@?#") {
		return bad("does not name a host")
	}
	return host, nil
}

// httpClient is the client the JWKS is fetched with: with the secret key, one that sends it as a
// Bearer token to the Backend API's host, and to no other.
func (k keySource) httpClient() *http.Client {
	if k.secret == "" {
		return nil // session's default
	}
	u, _ := url.Parse(k.jwksURL) // parsed in keySource
	return &http.Client{Transport: bearer{host: u.Host, key: k.secret, next: http.DefaultTransport}}
}

// bearer adds the Backend API key to requests for its host.
type bearer struct {
	host string
	key  clerkapi.SecretKey
	next http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == b.host {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+string(b.key))
	}
	return b.next.RoundTrip(r)
}
