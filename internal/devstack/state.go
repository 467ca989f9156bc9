package devstack

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/clerksync/clerksync/internal/clerkgen"
)

// stateFile holds what the dev stack keeps between runs and tells send and token.
const stateFile = "dev.json"

// State is the dev stack's state under its data directory: its secrets, and where the running
// stack listens. The file is 0600: it holds the webhook secret and the signing key.
type State struct {
	WebhookSecret string `json:"webhook_secret"`
	// SigningKey is the dev Clerk instance's RSA key (PKCS #8 PEM); KeyID its kid.
	SigningKey string `json:"signing_key"`
	KeyID      string `json:"key_id"`

	// Where the stack listened when it last started.
	IngestURL string `json:"ingest_url,omitempty"`
	APIURL    string `json:"api_url,omitempty"`
	WorkerURL string `json:"worker_url,omitempty"`
	NATSURL   string `json:"nats_url,omitempty"`
	JWKSURL   string `json:"jwks_url,omitempty"`
	// Issuer and AuthorizedParty are what the api checks a token's iss and azp against.
	Issuer          string `json:"issuer,omitempty"`
	AuthorizedParty string `json:"authorized_party,omitempty"`
	// Ports the stack chose, preferred again at the next start.
	NATSPort     int `json:"nats_port,omitempty"`
	PostgresPort int `json:"postgres_port,omitempty"`
	JWKSPort     int `json:"jwks_port,omitempty"`

	// LastUser is the user the last send was about: the default of send and token.
	LastUser string `json:"last_user,omitempty"`
	// Created maps the users send created to their creation time (ms), so a later user.updated
	// keeps it.
	Created map[string]int64 `json:"created,omitempty"`
	// Deleted are the users send deleted: the dev Backend API no longer has them.
	Deleted []string `json:"deleted,omitempty"`
	// LastOrg is the organization the last organization or membership send was about: their
	// default.
	LastOrg string `json:"last_org,omitempty"`
	// OrgCreated maps the organizations and memberships send made to their creation time (ms).
	OrgCreated map[string]int64 `json:"org_created,omitempty"`

	// ClerkSecretKey is the dev Backend API's key (CLERK_SECRET_KEY for worker reconcile).
	ClerkSecretKey string `json:"clerk_secret_key,omitempty"`
	// BackendOnly are users only the dev Backend API has (no webhook announced them), created
	// an hour apart from BackendOnlySince.
	BackendOnly      []string  `json:"backend_only_users,omitempty"`
	BackendOnlySince time.Time `json:"backend_only_since,omitzero"`
	// DatabaseURL is the private cluster's URL (empty with DATABASE_URL: it may hold a password).
	DatabaseURL string `json:"database_url,omitempty"`
}

// errNoState means the data directory has no dev stack state yet.
var errNoState = errors.New("no dev stack state")

// loadState reads dir's state, or errNoState.
func loadState(dir string) (State, error) {
	var s State
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return s, fmt.Errorf("%w in %s: start the stack first (go run ./cmd/dev)", errNoState, dir)
	}
	if err != nil {
		return s, fmt.Errorf("reading dev state: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("reading dev state %s: %w", filepath.Join(dir, stateFile), err)
	}
	return s, nil
}

// save writes the state atomically, readable by its owner only.
func (s State) save(dir string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, stateFile+".*")
	if err != nil {
		return fmt.Errorf("saving dev state: %w", err)
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // gone after the rename; only a failed save leaves it
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		_ = tmp.Close() // the write error is the one to report
		return fmt.Errorf("saving dev state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("saving dev state: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("saving dev state: %w", err)
	}
	return nil
}

// ensureSecrets fills in the webhook secret and the signing key when the state has none.
func (s *State) ensureSecrets() error {
	if s.WebhookSecret == "" {
		s.WebhookSecret = clerkgen.NewSecret()
	}
	if s.SigningKey != "" {
		_, err := s.privateKey()
		return err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generating the dev signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding the dev signing key: %w", err)
	}
	s.SigningKey = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("encoding the dev public key: %w", err)
	}
	sum := sha256.Sum256(pub)
	s.KeyID = "ins_dev_" + hex.EncodeToString(sum[:8])
	return nil
}

func (s State) privateKey() (*rsa.PrivateKey, error) {
	block, _ := pem.Decode([]byte(s.SigningKey))
	if block == nil {
		return nil, errors.New("dev state: signing_key is not PEM")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("dev state: signing_key: %w", err)
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("dev state: signing_key is not an RSA key")
	}
	return rsaKey, nil
}

// jwks is the JSON Web Key Set publishing the dev signing key, as Clerk publishes its own.
func (s State) jwks() ([]byte, error) {
	key, err := s.privateKey()
	if err != nil {
		return nil, err
	}
	b64 := base64.RawURLEncoding.EncodeToString
	return json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA",
		"use": "sig",
		"alg": "RS256",
		"kid": s.KeyID,
		"n":   b64(key.N.Bytes()),
		"e":   b64(big.NewInt(int64(key.E)).Bytes()),
	}}})
}

// TokenTTL is how long a dev session token lives.
const TokenTTL = time.Hour

// mint signs a session token for userID as the dev Clerk instance would: RS256 with the dev
// key's kid, and the claims the dev api checks.
func (s State) mint(userID, orgID string, now time.Time) (string, error) {
	key, err := s.privateKey()
	if err != nil {
		return "", err
	}
	sid := make([]byte, 20)
	_, _ = rand.Read(sid)
	claims := jwt.MapClaims{
		"sub": userID,
		"iss": s.Issuer,
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(TokenTTL).Unix(),
		"sid": "sess_" + base64.RawURLEncoding.EncodeToString(sid),
		"sts": "active",
		"v":   2,
	}
	if s.AuthorizedParty != "" {
		claims["azp"] = s.AuthorizedParty
	}
	if orgID != "" {
		// Clerk's v2 session token names the active organization in o (its id and the
		// member's role; the api reads only the id).
		claims["o"] = map[string]any{"id": orgID, "rol": "admin"}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = s.KeyID
	signed, err := tok.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("signing the token: %w", err)
	}
	return signed, nil
}
