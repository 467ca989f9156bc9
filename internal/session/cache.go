package session

import (
	"crypto/sha256"
	"sync"
	"time"
)

// DefaultCacheSize is how many verified tokens a Verifier remembers.
const DefaultCacheSize = 10_000

// tokenCache remembers tokens that passed every check, so a frontend sending the same token for
// its minute of life pays the RSA verification once. It is keyed by a SHA-256 of the whole token
// (so an entry is small whatever the token's size) and an entry lives until the token's exp at
// most. A hit skips only the signature: Verify still runs every claim check on it. The cache is
// emptied whenever the key set is replaced, so a revoked key stops working at the next fetch.
type tokenCache struct {
	max int

	mu         sync.Mutex
	entries    map[[sha256.Size]byte]cacheEntry
	lastSweep  time.Time
	generation uint64 // bumped by clear
}

type cacheEntry struct {
	claims  Claims
	expires time.Time
}

func newTokenCache(size int) *tokenCache {
	if size <= 0 {
		return nil // disabled
	}
	return &tokenCache{max: size, entries: make(map[[sha256.Size]byte]cacheEntry)}
}

// get returns a copy of the claims of token when it verified before and has not expired. On a
// miss it returns the cache's generation, for put: a token verified with keys that were replaced
// meanwhile is not remembered.
func (c *tokenCache) get(token string, now time.Time) (claims *Claims, gen uint64, ok bool) {
	if c == nil {
		return nil, 0, false
	}
	key := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return nil, c.generation, false
	}
	if !now.Before(e.expires) {
		delete(c.entries, key)
		return nil, c.generation, false
	}
	return e.claims.clone(), c.generation, true
}

// put remembers a token that passed every check until its exp, unless the cache was cleared
// since get returned gen. When the cache is full, expired entries go first (swept at most once a second),
// then a random one.
func (c *tokenCache) put(token string, claims *Claims, gen uint64, now time.Time) {
	if c == nil || claims.ExpiresAt == nil || !now.Before(claims.ExpiresAt.Time) {
		return
	}
	key := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.generation {
		return
	}
	if len(c.entries) >= c.max {
		if now.Sub(c.lastSweep) >= time.Second {
			c.lastSweep = now
			for k, e := range c.entries {
				if !now.Before(e.expires) {
					delete(c.entries, k)
				}
			}
		}
		for k := range c.entries { // map order is random: this evicts a random entry
			if len(c.entries) < c.max {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = cacheEntry{claims: *claims.clone(), expires: claims.ExpiresAt.Time}
}

// clear forgets every token.
func (c *tokenCache) clear() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	c.generation++
}

func (c *tokenCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
