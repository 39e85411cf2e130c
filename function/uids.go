package function

import (
	"errors"
	"fmt"
	"os/exec"
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
	byName map[string]uint32
	next   uint32
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
	if p.next >= p.r.Count {
		return 0, fmt.Errorf("%w (%d from %d)", errNoUID, p.r.Count, p.r.First)
	}
	uid := p.r.First + p.next
	p.next++
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
	need := []string{s.CodeDir}
	switch s.Runtime {
	case RuntimeExecutable:
		exe := s.Handler
		if !filepath.IsAbs(exe) {
			exe = filepath.Join(s.CodeDir, exe)
		}
		need = append(need, exe)
	case RuntimeNode, RuntimePython:
		it := interpreterFor(s.Runtime)
		bin, err := exec.LookPath(it.bin)
		if err != nil {
			return nil, err
		}
		if real, err := filepath.EvalSymlinks(bin); err == nil {
			bin = real
		}
		need = append(need, bin, bootstrapDir)
	}
	for _, p := range need {
		if err := safefile.Readable(p, uid, uid); err != nil {
			return nil, fmt.Errorf("uid %d cannot use %s: %w", uid, p, err)
		}
	}
	return &User{UID: uid, GID: uid}, nil
}
