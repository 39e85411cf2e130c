package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/edgekit/edgekit/edge/fleet/store"
)

// AuditEntry is one action somebody took, or tried to: who, with what
// role, did what to what, and whether it was refused.
type AuditEntry struct {
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"` // a user's name, or "token" for the API token
	Role   Role      `json:"role,omitempty"`
	Action string    `json:"action"` // e.g. "deploy", "pause", "sign-in"
	Object string    `json:"object,omitempty"`
	Detail string    `json:"detail,omitempty"`
	Error  string    `json:"error,omitempty"` // why it was refused or failed ("": it was done)
	Remote string    `json:"remote,omitempty"`
}

// MaxAuditDetail bounds an entry's detail, in bytes; more is cut.
const MaxAuditDetail = 4096

// Audit records an entry (Time defaults to now). Entries are kept by day
// and never changed.
func (f *Fleet) Audit(ctx context.Context, e AuditEntry) error {
	if e.Time.IsZero() {
		e.Time = f.now()
	}
	e.Time = e.Time.UTC()
	if len(e.Detail) > MaxAuditDetail {
		e.Detail = e.Detail[:MaxAuditDetail] + "…"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	key := e.Time.Format(time.DateOnly) + "/" + fmt.Sprintf("%019d", e.Time.UnixNano()) + "-" + hex.EncodeToString(b)
	if _, err := f.st.Apply(ctx, store.Create(collAudit, key, encode(e))); err != nil {
		return fmt.Errorf("fleet: audit entry %s %s: %w", e.Action, e.Object, err)
	}
	return nil
}

// AuditDay lists one day's entries (UTC), newest first.
func (f *Fleet) AuditDay(ctx context.Context, day time.Time) ([]AuditEntry, error) {
	es, err := values(list[AuditEntry](ctx, f.st, collAudit, day.UTC().Format(time.DateOnly)+"/", f.bad))
	slices.Reverse(es)
	return es, err
}
