package session

import (
	"cmp"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// minRSABits refuses toy keys, from a PEM or a JWKS.
const minRSABits = 2048

// maxJWKSBytes bounds a JWKS response; Clerk's is well under a kilobyte.
const maxJWKSBytes = 1 << 20

var pemBoundary = regexp.MustCompile(`-----(BEGIN|END) [A-Z0-9 ]+-----`)

// ParsePublicKey reads an RSA public key as Clerk's dashboard shows it: PEM with or without the
// BEGIN/END lines, line breaks optional (also when flattened to one line or escaped as \n).
func ParsePublicKey(s string) (*rsa.PublicKey, error) {
	s = strings.ReplaceAll(s, `\n`, "\n")
	s = pemBoundary.ReplaceAllString(s, "")
	s = strings.Join(strings.Fields(s), "")
	der, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("session: public key is not PEM or base64")
	}
	var key any
	if key, err = x509.ParsePKIXPublicKey(der); err != nil {
		if key, err = x509.ParsePKCS1PublicKey(der); err != nil {
			return nil, errors.New("session: public key is not a PKIX or PKCS #1 public key")
		}
	}
	rsaKey, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("session: public key is a %T, not an RSA key", key)
	}
	if rsaKey.N.BitLen() < minRSABits {
		return nil, fmt.Errorf("session: public key has %d bits, fewer than %d", rsaKey.N.BitLen(), minRSABits)
	}
	return rsaKey, nil
}

// remoteKeys is the Clerk instance's key set, fetched from its JWKS URL every CacheTTL.
//
// keyfunc (over a jwkset store) turns a token's kid into a key. jwkset's own HTTP client is not
// used: on an unknown kid it makes the request wait on a rate limiter (up to a minute by
// default) and then fetches with the request's context. Here a token whose kid is unknown
// either joins the fetch already in flight, starts one when none was started for an unknown kid
// in the last UnknownKeyInterval, or is refused at once. A lookup of a known kid reads memory
// only, so a hanging JWKS endpoint never slows it.
type remoteKeys struct {
	url                string
	client             *http.Client
	ttl                time.Duration
	fetchTimeout       time.Duration
	unknownKeyInterval time.Duration
	now                func() time.Time
	logger             *slog.Logger
	onRefresh          func(error)
	replaced           func() // called when a fetch replaced the key set

	store   *jwkset.MemoryJWKSet
	keyfunc keyfunc.Keyfunc
	loaded  atomic.Bool // a fetch has succeeded

	ctx    context.Context // ends at close; bounds every fetch
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	closed      bool
	inflight    *fetch    // the fetch in progress, if any
	lastUnknown time.Time // when the last fetch for an unknown kid started
}

// fetch is one JWKS request that several callers may wait for.
type fetch struct {
	done chan struct{}
	err  error // set before done is closed
}

func newRemoteKeys(opts Options, replaced func()) (*remoteKeys, error) {
	u, err := url.Parse(opts.JWKSURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("session: the JWKS URL must be an absolute http(s) URL")
	}
	r := &remoteKeys{
		url:                opts.JWKSURL,
		client:             opts.HTTPClient,
		ttl:                cmp.Or(opts.CacheTTL, DefaultCacheTTL),
		fetchTimeout:       cmp.Or(opts.FetchTimeout, DefaultFetchTimeout),
		unknownKeyInterval: cmp.Or(opts.UnknownKeyInterval, DefaultUnknownKeyInterval),
		now:                opts.Now,
		logger:             opts.Logger,
		onRefresh:          opts.OnRefresh,
		replaced:           replaced,
		store:              jwkset.NewMemoryStorage(),
	}
	if r.ttl < 0 || r.fetchTimeout < 0 || r.unknownKeyInterval < 0 {
		return nil, errors.New("session: negative JWKS interval")
	}
	if r.client == nil {
		r.client = &http.Client{Timeout: r.fetchTimeout}
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.logger == nil {
		r.logger = slog.New(slog.DiscardHandler)
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.keyfunc, err = keyfunc.New(keyfunc.Options{
		Ctx:     r.ctx,
		Storage: refreshingStore{MemoryJWKSet: r.store, keys: r},
	})
	if err != nil {
		r.cancel()
		return nil, fmt.Errorf("session: %w", err)
	}
	r.wg.Go(r.refreshLoop)
	return r, nil
}

func (r *remoteKeys) close() {
	r.mu.Lock()
	r.closed = true // no fetch starts from now on
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
}

// key returns the RSA key for the token's kid.
func (r *remoteKeys) key(ctx context.Context, t *jwt.Token) (any, error) {
	key, err := r.keyfunc.KeyfuncCtx(ctx)(t)
	if err != nil {
		// keyfunc's message quotes the kid: keep it out of ours.
		return nil, refuse(ReasonUnknownKey, "kid not in the key set")
	}
	if _, ok := key.(*rsa.PublicKey); !ok {
		return nil, refuse(ReasonUnknownKey, "kid names a %T, not an RSA key", key)
	}
	return key, nil
}

// refreshingStore is the jwkset store keyfunc reads, fetching the set again when a kid is missing.
type refreshingStore struct {
	*jwkset.MemoryJWKSet
	keys *remoteKeys
}

func (s refreshingStore) KeyRead(ctx context.Context, kid string) (jwkset.JWK, error) {
	jwk, err := s.MemoryJWKSet.KeyRead(ctx, kid)
	if !errors.Is(err, jwkset.ErrKeyNotFound) || !s.keys.refreshForUnknownKey(ctx) {
		return jwk, err
	}
	return s.MemoryJWKSet.KeyRead(ctx, kid)
}

// refreshForUnknownKey fetches the key set for a token whose kid is unknown and reports whether a
// fetch succeeded. It joins a fetch already in flight, starts one when none was started for an
// unknown kid in the last unknownKeyInterval, and otherwise returns false at once.
func (r *remoteKeys) refreshForUnknownKey(ctx context.Context) bool {
	r.mu.Lock()
	f := r.inflight
	if f == nil {
		now := r.now()
		if r.closed || !r.lastUnknown.IsZero() && now.Sub(r.lastUnknown) < r.unknownKeyInterval {
			r.mu.Unlock()
			return false
		}
		r.lastUnknown = now
		f = r.startLocked()
	}
	r.mu.Unlock()
	select {
	case <-f.done:
		return f.err == nil
	case <-ctx.Done():
		return false
	}
}

// refreshLoop fetches the key set at once, then every ttl; after a failure it tries again sooner,
// backing off from a second to 30 s, keeping the keys it has.
func (r *remoteKeys) refreshLoop() {
	const firstRetry, maxRetry = time.Second, 30 * time.Second
	retry := firstRetry
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return
		}
		f := r.inflight
		if f == nil {
			f = r.startLocked()
		}
		r.mu.Unlock()
		select {
		case <-f.done:
		case <-r.ctx.Done():
			return
		}
		wait := r.ttl
		if f.err != nil {
			wait, retry = min(retry, r.ttl), min(2*retry, maxRetry)
		} else {
			retry = firstRetry
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-r.ctx.Done():
			timer.Stop()
			return
		}
	}
}

// startLocked starts a fetch; r.mu is held and r is not closed.
func (r *remoteKeys) startLocked() *fetch {
	f := &fetch{done: make(chan struct{})}
	r.inflight = f
	r.wg.Go(func() {
		err := r.fetchKeys()
		r.mu.Lock()
		r.inflight = nil
		f.err = err
		close(f.done)
		r.mu.Unlock()
		if err != nil {
			r.logger.Warn("fetching the Clerk JWKS failed; keeping the keys already fetched", "err", err)
		} else {
			r.logger.Debug("fetched the Clerk JWKS")
		}
		if r.onRefresh != nil {
			r.onRefresh(err)
		}
	})
	return f
}

// fetchKeys replaces the key set with the RS256 signing keys the JWKS URL serves now. A response
// without any leaves the current keys in place.
func (r *remoteKeys) fetchKeys() error {
	ctx, cancel := context.WithTimeout(r.ctx, r.fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return fmt.Errorf("fetching JWKS: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetching JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching JWKS: status %d", resp.StatusCode)
	}
	var set jwkset.JWKSMarshal
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJWKSBytes)).Decode(&set); err != nil {
		return fmt.Errorf("decoding JWKS: %w", err)
	}
	keys := signingKeys(set)
	if len(keys) == 0 {
		return errors.New("JWKS has no usable RS256 signing key")
	}
	if err := r.store.KeyReplaceAll(ctx, keys); err != nil {
		return fmt.Errorf("storing JWKS: %w", err)
	}
	r.loaded.Store(true)
	r.replaced()
	return nil
}

// signingKeys keeps the set's RSA keys that have a kid, may sign RS256 and are big enough. Only
// the public parameters are read: a certificate URL (x5u) in the set is never followed.
func signingKeys(set jwkset.JWKSMarshal) []jwkset.JWK {
	var keys []jwkset.JWK
	for _, m := range set.Keys {
		if m.KTY != jwkset.KtyRSA || m.KID == "" ||
			(m.USE != "" && m.USE != jwkset.UseSig) || (m.ALG != "" && m.ALG != jwkset.AlgRS256) {
			continue
		}
		public := jwkset.JWKMarshal{KTY: m.KTY, USE: m.USE, ALG: m.ALG, KID: m.KID, N: m.N, E: m.E}
		jwk, err := jwkset.NewJWKFromMarshal(public, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			continue
		}
		if key, ok := jwk.Key().(*rsa.PublicKey); !ok || key.N.BitLen() < minRSABits {
			continue
		}
		keys = append(keys, jwk)
	}
	return keys
}
