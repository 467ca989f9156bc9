package api

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clerksync/clerksync/internal/service"
	"github.com/clerksync/clerksync/internal/session"
	"github.com/clerksync/clerksync/internal/session/sessiontest"
)

// FuzzSessionAuth drives token extraction and verification with arbitrary Authorization and
// Cookie headers: it must never panic or fail with a 500, must answer every refusal in the
// contract's shape, and must let through only tokens the test signed.
func FuzzSessionAuth(f *testing.F) {
	iss := sessiontest.NewIssuer(f)
	// PEM mode: no network, so the fuzzer runs fast; the checks are the same.
	v, err := session.New(session.Options{
		PublicKey:         iss.PublicKeyPEM(),
		Leeway:            5 * time.Second,
		Issuer:            sessiontest.IssuerURL,
		AuthorizedParties: []string{sessiontest.AuthorizedParty},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(v.Close)
	s := &server{
		deps:  deps{logger: slog.New(slog.DiscardHandler), verifier: v, metrics: newMetrics(prometheus.NewRegistry())},
		known: map[string]bool{"/": true},
	}
	e := echo.New()
	e.HTTPErrorHandler = s.handleError
	e.Use(s.observe)
	e.GET("/", func(c *echo.Context) error {
		return c.String(http.StatusOK, sessionClaims(c).UserID())
	}, s.requireSession)

	claims := sessiontest.Claims("user_fuzz")
	claims["exp"] = time.Now().Add(24 * time.Hour).Unix()
	signed := map[string]bool{}
	for _, tok := range []string{iss.Mint(claims), iss.Mint(claims, sessiontest.WithHeader("typ", nil))} {
		signed[tok] = true
		f.Add("Bearer "+tok, "")
		f.Add("", "__session="+tok)
		f.Add("Bearer "+tok, "__session="+tok)
		f.Add("Basic x", "a=b; __session="+tok)
	}
	f.Add("", "")
	f.Add("Bearer", "")
	f.Add("Bearer ..", "__session=..")

	f.Fuzz(func(t *testing.T, authorization, cookie string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		token, present := sessionToken(req)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)

		switch rec.Code {
		case http.StatusOK:
			if !signed[token] {
				t.Fatalf("accepted a token the test did not sign: %q", token)
			}
			if rec.Body.String() != "user_fuzz" {
				t.Fatalf("accepted as %q", rec.Body)
			}
		case http.StatusUnauthorized:
			var body service.ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("401 body %q: %v", rec.Body, err)
			}
			want, challenge := "invalid_token", `Bearer error="invalid_token"`
			if !present {
				want, challenge = "missing_token", "Bearer"
			}
			if body.Error.Code != want || rec.Header().Get("WWW-Authenticate") != challenge {
				t.Fatalf("401 %s with challenge %q, want %s", rec.Body, rec.Header().Get("WWW-Authenticate"), want)
			}
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}
