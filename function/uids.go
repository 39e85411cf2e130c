package function

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/edgekit/edgekit/internal/safefile"
)

// UIDRange is a range of user ids (each used as the group id too).
type UIDRange struct {
	First uint32
	Count uint32
}

// Where functions get their own uid unless Options.FunctionUIDs says
// otherwise: 90000–90999, below the usual subordinate-uid ranges (100000
// and up, for rootless containers) and above the system, login and systemd
// DynamicUser ranges (up to 65519).
const (
	DefaultFunctionUIDFirst = 90000
	DefaultFunctionUIDCount = 1000
)

// uidPool gives each function name a uid of its own, kept for the host's
// life. It is safe for concurrent use.
type uidPool struct {
	r      UIDRange
	mu     sync.Mutex
	byName map[string]uint32 // the i-th name taken has First+i
}

func newUIDPool(r UIDRange) *uidPool {
	return &uidPool{r: r, byName: make(map[string]uint32)}
}

var errNoUID = errors.New("every uid of the function range is taken")

// of returns name's uid, taking the next free one the first time.
func (p *uidPool) of(name string) (uint32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if uid, ok := p.byName[name]; ok {
		return uid, nil
	}
	n := uint32(len(p.byName))
	if n >= p.r.Count {
		return 0, fmt.Errorf("%w (%d from %d)", errNoUID, p.r.Count, p.r.First)
	}
	uid := p.r.First + n
	p.byName[name] = uid
	return uid, nil
}

// ownUser decides the user an out-of-process spec with no User runs as: a
// uid of its own from the pool, when every file the instance needs is
// within that uid's reach (the code directory, the handler, the
// interpreter and the bootstrap). When one is not, it returns nil and why:
// the instance then runs as the host's user.
func ownUser(pool *uidPool, s Spec, bootstrapDir string) (*User, error) {
	uid, err := pool.of(s.Name)
	if err != nil {
		return nil, err
	}
	// What the instance starts: the handler, or the interpreter and its
	// bootstrap script (the last argument).
	exe, args, err := command(s, bootstrapDir)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	need := []string{s.CodeDir, exe}
	if len(args) > 0 {
		need = append(need, args[len(args)-1])
	}
	for _, p := range need {
		if err := safefile.Readable(p, uid, uid); err != nil {
			return nil, fmt.Errorf("uid %d cannot use %s: %w", uid, p, err)
		}
	}
	return &User{UID: uid, GID: uid}, nil
}
