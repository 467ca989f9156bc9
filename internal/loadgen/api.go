package loadgen

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v5"

	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/service"
	"github.com/clerksync/clerksync/internal/worker"
)

// Minter signs session tokens as a Clerk instance does: RS256, with a kid.
type Minter struct {
	Key             *rsa.PrivateKey
	KeyID           string
	Issuer          string
	AuthorizedParty string
}

// NewMinter generates a signing key.
func NewMinter(issuer, authorizedParty string) (*Minter, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generating a signing key: %w", err)
	}
	return &Minter{Key: key, KeyID: keyID(&key.PublicKey), Issuer: issuer, AuthorizedParty: authorizedParty}, nil
}

// ParseMinterKey reads a PEM private key (PKCS #8 or PKCS #1) to mint with.
func ParseMinterKey(pemBytes []byte, kid, issuer, authorizedParty string) (*Minter, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("signing key: not PEM")
	}
	var key *rsa.PrivateKey
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, errors.New("signing key: not an RSA key")
		}
		key = rk
	} else if key, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
		return nil, errors.New("signing key: neither PKCS #8 nor PKCS #1")
	}
	if kid == "" {
		kid = keyID(&key.PublicKey)
	}
	return &Minter{Key: key, KeyID: kid, Issuer: issuer, AuthorizedParty: authorizedParty}, nil
}

func keyID(pub *rsa.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return "ins_loadgen_" + hex.EncodeToString(sum[:8])
}

// PublicPEM is the public key as CLERK_JWT_KEY takes it.
func (m *Minter) PublicPEM() string {
	der, _ := x509.MarshalPKIXPublicKey(&m.Key.PublicKey)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// Mint signs a token for the Clerk user sub, valid from now for ttl.
func (m *Minter) Mint(sub string, now time.Time, ttl time.Duration) (string, error) {
	sid := make([]byte, 20)
	_, _ = rand.Read(sid)
	claims := jwt.MapClaims{
		"sub": sub,
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(ttl).Unix(),
		"sid": "sess_" + base64.RawURLEncoding.EncodeToString(sid),
		"v":   2,
	}
	if m.Issuer != "" {
		claims["iss"] = m.Issuer
	}
	if m.AuthorizedParty != "" {
		claims["azp"] = m.AuthorizedParty
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = m.KeyID
	s, err := t.SignedString(m.Key)
	if err != nil {
		return "", fmt.Errorf("signing a token: %w", err)
	}
	return s, nil
}

// MintAll mints one token per user: the frontend of each user sends the same token again and
// again until it expires, which is what a cache of verified tokens relies on.
func (m *Minter) MintAll(users []string, now time.Time, ttl time.Duration) ([]string, error) {
	tokens := make([]string, len(users))
	for i, u := range users {
		t, err := m.Mint(u, now, ttl)
		if err != nil {
			return nil, err
		}
		tokens[i] = t
	}
	return tokens, nil
}

// SyncedUsers returns up to limit Clerk user ids that have a live users row: /auth/me answers 200
// for them.
func SyncedUsers(ctx context.Context, databaseURL string, limit int) ([]string, error) {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to postgres: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	rows, err := conn.Query(ctx, "SELECT clerk_user_id FROM users WHERE deleted_at IS NULL ORDER BY clerk_user_id LIMIT $1", limit)
	if err != nil {
		return nil, fmt.Errorf("listing synced users: %w", err)
	}
	users, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("listing synced users: %w", err)
	}
	if len(users) == 0 {
		return nil, errors.New("no synced users: run loadgen ingest (and let the worker catch up) first")
	}
	return users, nil
}

// APIOptions configures API.
type APIOptions struct {
	// URL is the /auth/me URL.
	URL      string
	Tokens   []string
	Clients  int
	Duration time.Duration
	Progress *Progress
}

// API calls GET /auth/me for o.Duration with o.Clients keep-alive clients, going round the
// tokens.
func API(ctx context.Context, stage string, o APIOptions) (Result, error) {
	if len(o.Tokens) == 0 {
		return Result{}, errors.New("no tokens to call the api with")
	}
	client := newHTTPClient(o.Clients)
	defer client.CloseIdleConnections()
	o.Progress.Stage(stage, 0)
	r := drive(ctx, stage, load{Clients: o.Clients, Duration: o.Duration, Progress: o.Progress},
		func(ctx context.Context, _, i int) (string, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.URL, nil)
			if err != nil {
				return "", err
			}
			req.Header.Set("Authorization", "Bearer "+o.Tokens[i%len(o.Tokens)])
			resp, err := client.Do(req)
			if err != nil {
				return "", err
			}
			_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			_ = resp.Body.Close()
			if err != nil {
				return "", err
			}
			return strconv.Itoa(resp.StatusCode), nil
		})
	r.Note = fmt.Sprintf("GET /auth/me round %d users' tokens", len(o.Tokens))
	return r, nil
}

// APIBaseline is /auth/me's physical limit: a bare echo handler that verifies the RS256 token
// with golang-jwt (signature, exp, nbf, iat, iss) and reads the caller's users row by primary
// key, nothing else. It serves on loopback until Close.
type APIBaseline struct {
	URL  string // the /auth/me URL
	srv  *http.Server
	pool *pgxpool.Pool
	done chan error
}

// StartAPIBaseline starts the baseline server against databaseURL, verifying with pub.
func StartAPIBaseline(ctx context.Context, databaseURL string, pub *rsa.PublicKey, issuer string, logger *slog.Logger) (*APIBaseline, error) {
	pool, err := postgres.Open(ctx, databaseURL)
	if err != nil {
		return nil, err
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{"RS256"}), jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(), jwt.WithLeeway(5 * time.Second)}
	if issuer != "" {
		opts = append(opts, jwt.WithIssuer(issuer))
	}
	parser := jwt.NewParser(opts...)
	keyfunc := func(*jwt.Token) (any, error) { return pub, nil }

	e := echo.NewWithConfig(echo.Config{Logger: logger})
	e.GET("/auth/me", func(c *echo.Context) error {
		token, ok := strings.CutPrefix(c.Request().Header.Get("Authorization"), "Bearer ")
		if !ok {
			service.WriteError(c.Response(), http.StatusUnauthorized, "missing_token", "no token")
			return nil
		}
		var claims jwt.RegisteredClaims
		if _, err := parser.ParseWithClaims(token, &claims, keyfunc); err != nil || claims.Subject == "" {
			service.WriteError(c.Response(), http.StatusUnauthorized, "invalid_token", "invalid token")
			return nil
		}
		var u baselineUser
		err := pool.QueryRow(c.Request().Context(),
			`SELECT clerk_user_id, email, username, first_name, last_name, image_url, clerk_created_at, clerk_updated_at
			 FROM users WHERE user_id = $1`, pgtype.UUID{Bytes: worker.UserID(claims.Subject), Valid: true}).
			Scan(&u.ClerkUserID, &u.Email, &u.Username, &u.FirstName, &u.LastName, &u.ImageURL, &u.CreatedAt, &u.UpdatedAt)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			service.WriteError(c.Response(), http.StatusNotFound, "user_not_synced", "not synced")
			return nil
		case err != nil:
			service.WriteError(c.Response(), http.StatusInternalServerError, "internal", "internal error")
			return nil
		}
		return c.JSON(http.StatusOK, u)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("listening: %w", err)
	}
	srv := service.NewServer(e, logger)
	b := &APIBaseline{URL: "http://" + ln.Addr().String() + "/auth/me", srv: srv, pool: pool, done: make(chan error, 1)}
	go func() { b.done <- srv.Serve(ln) }()
	return b, nil
}

// Close stops the server.
func (b *APIBaseline) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = b.srv.Shutdown(ctx)
	<-b.done
	b.pool.Close()
}

type baselineUser struct {
	ClerkUserID string     `json:"clerk_user_id"`
	Email       *string    `json:"email"`
	Username    *string    `json:"username"`
	FirstName   *string    `json:"first_name"`
	LastName    *string    `json:"last_name"`
	ImageURL    *string    `json:"image_url"`
	CreatedAt   *time.Time `json:"created_at"`
	UpdatedAt   *time.Time `json:"updated_at"`
}
