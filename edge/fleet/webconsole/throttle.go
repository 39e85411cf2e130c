package webconsole

import (
	"sync"
	"time"
)

// throttle locks a user name out of signing in for a while after
// repeated wrong passwords: after maxWrongPasswords, a minute, doubling at each
// failure since, up to a quarter of an hour. It keeps at most maxNames
// names (the oldest failure goes first), so names an attacker invents
// cannot fill memory.
type throttle struct {
	mu    sync.Mutex
	names map[string]*failures
}

type failures struct {
	count int
	last  time.Time
	until time.Time
}

const (
	maxWrongPasswords = 5
	maxNames          = 4096
	lockMin           = time.Minute
	lockMax           = 15 * time.Minute
)

// locked reports until when name may not sign in (zero: it may).
func (t *throttle) locked(name string, now time.Time) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.names[name]; f != nil && now.Before(f.until) {
		return f.until
	}
	return time.Time{}
}

// failed counts a wrong password for name.
func (t *throttle) failed(name string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.names == nil {
		t.names = map[string]*failures{}
	}
	f := t.names[name]
	if f == nil {
		if len(t.names) >= maxNames {
			t.evictOldest()
		}
		f = &failures{}
		t.names[name] = f
	}
	if now.Sub(f.last) > lockMax {
		f.count = 0 // an old streak is forgotten
	}
	f.count++
	f.last = now
	if f.count >= maxWrongPasswords {
		lock := lockMin << min(f.count-maxWrongPasswords, 4)
		f.until = now.Add(min(lock, lockMax))
	}
}

// succeeded forgets name's failures.
func (t *throttle) succeeded(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.names, name)
}

func (t *throttle) evictOldest() {
	var oldest string
	var at time.Time
	for n, f := range t.names {
		if oldest == "" || f.last.Before(at) {
			oldest, at = n, f.last
		}
	}
	delete(t.names, oldest)
}
