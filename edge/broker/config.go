package broker

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/internal/safefile"
)

// Listener is one address the broker accepts MQTT connections on.
type Listener struct {
	// Address is host:port. Port 0 picks a free port once, at New, and
	// keeps it across restarts. The default is "127.0.0.1:1883".
	Address string
	// TLS, when set, makes this an MQTT-over-TLS listener.
	TLS *TLS
}

// TLS is a listener's certificate configuration (PEM files).
type TLS struct {
	CertFile, KeyFile string
	// CAFile verifies client certificates; with RequireClientCert the
	// client must present one.
	CAFile            string
	RequireClientCert bool
}

// User is a username and password clients may connect with.
type User struct {
	Name, Password string
}

// Access is what an ACL rule grants.
type Access string

// The access kinds of a Mosquitto ACL rule.
const (
	Read      Access = "read"
	Write     Access = "write"
	ReadWrite Access = "readwrite"
	Deny      Access = "deny"
)

// ACLRule grants or denies one user (or anonymous clients, User "") access
// to a topic filter. With Pattern set the rule applies to every client and
// the filter may use %c (client id) and %u (username).
type ACLRule struct {
	User    string
	Pattern bool
	Access  Access
	Topic   string
}

// Options configure a Broker. DataDir is required; every other zero value
// means the default written beside it.
type Options struct {
	// DataDir holds the generated configuration, password and ACL files
	// and the persistence database. Required.
	DataDir string
	// Binary is the mosquitto executable; "" looks up "mosquitto" in PATH
	// and then /usr/sbin/mosquitto.
	Binary string
	// Listeners default to one on 127.0.0.1:1883.
	Listeners []Listener
	// Users may connect with a password. Passwords are stored hashed
	// (PBKDF2-SHA512, Mosquitto's $7$ format).
	Users []User
	// ACL restricts topics. nil means no ACL: every client that may connect
	// may publish and subscribe anywhere. Rules with User "" apply to
	// anonymous clients.
	ACL []ACLRule
	// AllowAnonymous lets clients without a username connect on every
	// listener. Without it, anonymous clients may connect only on loopback
	// listeners, and only when no Users are configured or AnonymousLoopback
	// is set.
	AllowAnonymous bool
	// AnonymousLoopback keeps anonymous access on loopback listeners even
	// when Users are configured.
	AnonymousLoopback bool
	// DisablePersistence keeps retained messages and sessions in memory
	// only. By default they are saved in DataDir and survive restarts.
	DisablePersistence bool
	// AutosaveInterval is how often the persistence database is saved while
	// running (it is always saved on a clean stop); default 10 s.
	AutosaveInterval time.Duration
	// MaxPacketSize limits incoming MQTT packets in bytes; default
	// DefaultMaxPacketSize. A negative value sets no limit beyond MQTT's
	// 256 MB.
	MaxPacketSize int
	// MaxConnections bounds the clients connected at once on each
	// listener; default 1,000. A negative value sets no bound.
	MaxConnections int
	// User is the user Mosquitto runs as when the gateway runs as root
	// (Mosquitto drops root once its listeners are open); default
	// "mosquitto" where that user exists (Debian's package makes it),
	// else "nobody". DataDir's parents must be searchable by it; the
	// broker's own files are made its. Ignored when the gateway does not
	// run as root: Mosquitto then runs as the gateway's user.
	User string
	// MaxQueuedMessages bounds the QoS 1 and 2 messages kept for each
	// disconnected persistent session (and beyond the in-flight window of a
	// connected one); Mosquitto drops what is over it. Default 10,000;
	// Mosquitto's own default of 1,000 loses messages when a subscriber
	// reconnects after a publisher that flushes its queue.
	MaxQueuedMessages int
	// MaxInflightMessages bounds the QoS 1 and 2 messages sent to each
	// client and not yet acknowledged; default 1,000 (Mosquitto's own is
	// 20). mqttbus acknowledges a message only after its handlers have
	// returned, and sends acknowledgements every few milliseconds: a
	// window of 20 capped a client at ~10,000 QoS 1 messages a second.
	MaxInflightMessages int
	// Restart is the backoff between restarts after the broker dies;
	// default 100 ms doubling to 10 s. A run that lasted a minute resets it.
	RestartMin, RestartMax time.Duration
	// ReadyTimeout bounds each start's wait for the listeners; default 10 s.
	ReadyTimeout time.Duration
	// StopTimeout is the grace between SIGTERM and SIGKILL; default 5 s.
	StopTimeout time.Duration
	// ExtraConfig lines are appended to the generated mosquitto.conf
	// verbatim, for settings these options do not cover.
	ExtraConfig []string
	// Logger receives the broker's own log lines and state changes; nil
	// discards.
	Logger *slog.Logger
}

// DefaultMaxPacketSize is the largest MQTT packet the broker accepts
// unless told otherwise: room for the 1 MiB payloads the SDK's callers
// take by default, and a bound on what each connection can make Mosquitto
// hold.
const DefaultMaxPacketSize = 2 << 20

// resolved is the validated configuration with free ports picked.
type resolved struct {
	Options
	listeners []Listener // with concrete ports
	runAs     *user.User // the user Mosquitto drops root to; nil when not root
}

// runAsUser finds the user Mosquitto runs as when started as root.
func runAsUser(name string) (*user.User, error) {
	if name != "" {
		u, err := user.Lookup(name)
		if err != nil {
			return nil, fmt.Errorf("User %q: %v", name, err)
		}
		if u.Uid == "0" {
			return nil, fmt.Errorf("User %q is root: Mosquitto must drop root", name)
		}
		return u, nil
	}
	for _, n := range []string{"mosquitto", "nobody"} {
		if u, err := user.Lookup(n); err == nil && u.Uid != "0" {
			return u, nil
		}
	}
	return nil, errors.New("no user to run Mosquitto as (neither mosquitto nor nobody exists): set User")
}

func resolve(o Options) (*resolved, error) {
	if o.DataDir == "" {
		return nil, fmt.Errorf("%w: DataDir is required", ErrConfig)
	}
	dir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, fmt.Errorf("%w: DataDir %q: %v", ErrConfig, o.DataDir, err)
	}
	o.DataDir = dir
	if len(o.Listeners) == 0 {
		o.Listeners = []Listener{{Address: "127.0.0.1:1883"}}
	}
	if o.MaxPacketSize == 0 {
		o.MaxPacketSize = DefaultMaxPacketSize
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = 1000
	}
	if o.MaxQueuedMessages <= 0 {
		o.MaxQueuedMessages = 10_000
	}
	if o.MaxInflightMessages <= 0 {
		o.MaxInflightMessages = 1000
	}
	if o.AutosaveInterval <= 0 {
		o.AutosaveInterval = 10 * time.Second
	}
	if o.RestartMin <= 0 {
		o.RestartMin = 100 * time.Millisecond
	}
	if o.RestartMax <= 0 {
		o.RestartMax = 10 * time.Second
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 10 * time.Second
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 5 * time.Second
	}
	r := &resolved{Options: o}
	if os.Geteuid() == 0 {
		ru, err := runAsUser(o.User)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		r.runAs = ru
	}
	for i, l := range o.Listeners {
		host, port, err := net.SplitHostPort(l.Address)
		if err != nil {
			return nil, fmt.Errorf("%w: listener %d address %q: %v", ErrConfig, i, l.Address, err)
		}
		if host == "" {
			return nil, fmt.Errorf("%w: listener %d address %q: give an explicit host (0.0.0.0 for all interfaces)", ErrConfig, i, l.Address)
		}
		if port == "0" {
			p, err := freePort(host)
			if err != nil {
				return nil, fmt.Errorf("%w: listener %d: picking a free port on %s: %v", ErrConfig, i, host, err)
			}
			l.Address = net.JoinHostPort(host, p)
		}
		if l.TLS != nil && (l.TLS.CertFile == "" || l.TLS.KeyFile == "") {
			return nil, fmt.Errorf("%w: listener %d (%s): TLS needs CertFile and KeyFile", ErrConfig, i, l.Address)
		}
		if l.TLS != nil && l.TLS.RequireClientCert && l.TLS.CAFile == "" {
			return nil, fmt.Errorf("%w: listener %d (%s): RequireClientCert needs CAFile", ErrConfig, i, l.Address)
		}
		r.listeners = append(r.listeners, l)
	}
	seen := map[string]bool{}
	for i, u := range o.Users {
		if u.Name == "" || strings.ContainsAny(u.Name, ":\n\r") {
			return nil, fmt.Errorf("%w: user %d: name %q is empty or contains ':' or a newline", ErrConfig, i, u.Name)
		}
		if seen[u.Name] {
			return nil, fmt.Errorf("%w: user %q listed twice", ErrConfig, u.Name)
		}
		seen[u.Name] = true
		if u.Password == "" {
			return nil, fmt.Errorf("%w: user %q has an empty password", ErrConfig, u.Name)
		}
	}
	for i, a := range o.ACL {
		switch a.Access {
		case Read, Write, ReadWrite, Deny:
		default:
			return nil, fmt.Errorf("%w: ACL rule %d: access %q (want read, write, readwrite or deny)", ErrConfig, i, a.Access)
		}
		if strings.ContainsAny(a.Topic, "\n\r") || strings.ContainsAny(a.User, "\n\r") {
			return nil, fmt.Errorf("%w: ACL rule %d: newline in user or topic", ErrConfig, i)
		}
		topic := strings.NewReplacer("%c", "c", "%u", "u").Replace(a.Topic)
		if err := bus.ValidateFilter(topic); err != nil {
			return nil, fmt.Errorf("%w: ACL rule %d: %v", ErrConfig, i, err)
		}
		if a.Pattern && a.User != "" {
			return nil, fmt.Errorf("%w: ACL rule %d: a pattern applies to every client; leave User empty", ErrConfig, i)
		}
	}
	for i, line := range o.ExtraConfig {
		if strings.ContainsAny(line, "\n\r") {
			return nil, fmt.Errorf("%w: ExtraConfig line %d contains a newline", ErrConfig, i)
		}
	}
	return r, nil
}

func freePort(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

func (r *resolved) confPath() string   { return filepath.Join(r.DataDir, "mosquitto.conf") }
func (r *resolved) passwdPath() string { return filepath.Join(r.DataDir, "passwd") }
func (r *resolved) aclPath() string    { return filepath.Join(r.DataDir, "acl") }
func (r *resolved) dbDir() string      { return filepath.Join(r.DataDir, "db") + "/" }

// writeFiles writes mosquitto.conf, the password file and the ACL file.
func (r *resolved) writeFiles() error {
	if err := os.MkdirAll(r.dbDir(), 0o700); err != nil {
		return err
	}
	var c strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&c, format+"\n", args...) }
	line("# Written by edgekit edge/broker; changes are overwritten at start.")
	line("per_listener_settings true")
	if r.runAs != nil {
		// Started as root, Mosquitto opens its listeners and then runs as
		// this user, which reads the password and ACL files and writes
		// the database.
		line("user %s", r.runAs.Username)
	} else if u, err := user.Current(); err == nil && u.Username != "" {
		line("user %s", u.Username)
	}
	line("log_dest stderr")
	line("log_type error")
	line("log_type warning")
	line("log_type notice")
	line("log_type information")
	line("log_timestamp false")
	line("connection_messages true")
	if r.DisablePersistence {
		line("persistence false")
	} else {
		line("persistence true")
		line("persistence_location %s", r.dbDir())
		line("autosave_interval %d", max(1, int(r.AutosaveInterval.Round(time.Second)/time.Second)))
	}
	line("max_queued_messages %d", r.MaxQueuedMessages)
	line("max_inflight_messages %d", r.MaxInflightMessages)
	// Without it Nagle's algorithm holds a small packet (a PUBACK) behind
	// one not yet acknowledged on the same connection, for up to the
	// peer's 40 ms delayed ACK.
	line("set_tcp_nodelay true")
	if r.MaxPacketSize > 0 {
		line("max_packet_size %d", r.MaxPacketSize)
	}
	maxConns := r.MaxConnections
	if maxConns < 0 {
		maxConns = -1
	}
	for _, l := range r.listeners {
		host, port, _ := net.SplitHostPort(l.Address)
		line("")
		line("listener %s %s", port, host)
		line("max_connections %d", maxConns)
		anon := r.AllowAnonymous || (isLoopback(host) && (len(r.Users) == 0 || r.AnonymousLoopback))
		line("allow_anonymous %t", anon)
		if len(r.Users) > 0 {
			line("password_file %s", r.passwdPath())
		}
		if r.ACL != nil {
			line("acl_file %s", r.aclPath())
		}
		if t := l.TLS; t != nil {
			files, err := r.tlsFiles(l, port)
			if err != nil {
				return err
			}
			line("certfile %s", files.CertFile)
			line("keyfile %s", files.KeyFile)
			if files.CAFile != "" {
				line("cafile %s", files.CAFile)
			}
			line("require_certificate %t", t.RequireClientCert)
		}
	}
	if len(r.ExtraConfig) > 0 {
		line("")
		for _, l := range r.ExtraConfig {
			line("%s", l)
		}
	}
	if err := writeFile(r.confPath(), c.String()); err != nil {
		return err
	}
	if len(r.Users) > 0 {
		var p strings.Builder
		for _, u := range r.Users {
			h, err := hashPassword(u.Password)
			if err != nil {
				return err
			}
			fmt.Fprintf(&p, "%s:%s\n", u.Name, h)
		}
		if err := writeFile(r.passwdPath(), p.String()); err != nil {
			return err
		}
	}
	if r.ACL != nil {
		if err := writeFile(r.aclPath(), aclText(r.ACL)); err != nil {
			return err
		}
	}
	if r.runAs != nil {
		return r.handOver()
	}
	return nil
}

func (r *resolved) tlsDir() string { return filepath.Join(r.DataDir, "tls") }

// tlsFiles returns the certificate files a listener's configuration names.
// Mosquitto reads them after it dropped root, so that the key may stay
// readable by root alone, a broker started as root reads copies in its
// own directory (handOver gives them to its user).
func (r *resolved) tlsFiles(l Listener, port string) (TLS, error) {
	t := *l.TLS
	if r.runAs == nil {
		return t, nil
	}
	if err := os.MkdirAll(r.tlsDir(), 0o700); err != nil {
		return t, err
	}
	for _, f := range []struct {
		path *string
		name string
	}{{&t.CertFile, "cert"}, {&t.KeyFile, "key"}, {&t.CAFile, "ca"}} {
		if *f.path == "" {
			continue
		}
		b, err := os.ReadFile(*f.path)
		if err != nil {
			return t, fmt.Errorf("listener %s: %w", l.Address, err)
		}
		dst := filepath.Join(r.tlsDir(), port+"-"+f.name+".pem")
		if err := writeFile(dst, string(b)); err != nil {
			return t, err
		}
		*f.path = dst
	}
	return t, nil
}

// handOver gives the files Mosquitto reads or writes after it dropped root
// to the user it runs as, and checks that it can reach them.
func (r *resolved) handOver() error {
	uid, _ := strconv.Atoi(r.runAs.Uid)
	gid, _ := strconv.Atoi(r.runAs.Gid)
	if err := safefile.Searchable(filepath.Dir(r.DataDir), uint32(uid), uint32(gid)); err != nil {
		return fmt.Errorf("%w: DataDir %s: %v, and Mosquitto runs as %s (uid %d) once started: make it searchable (chmod o+x) or set User",
			ErrConfig, r.DataDir, err, r.runAs.Username, uid)
	}
	paths := []string{r.DataDir, r.dbDir()}
	if len(r.Users) > 0 {
		paths = append(paths, r.passwdPath())
	}
	if r.ACL != nil {
		paths = append(paths, r.aclPath())
	}
	for _, dir := range []string{r.dbDir(), r.tlsDir()} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		paths = append(paths, dir)
		for _, e := range entries {
			paths = append(paths, filepath.Join(dir, e.Name()))
		}
	}
	for _, p := range paths {
		if err := os.Lchown(p, uid, gid); err != nil {
			return fmt.Errorf("giving %s to %s: %w", p, r.runAs.Username, err)
		}
	}
	return os.Chmod(r.DataDir, 0o700)
}

// aclText renders rules in Mosquitto's ACL file format: anonymous rules
// first, then patterns, then one "user" block per user in order of first
// appearance.
func aclText(rules []ACLRule) string {
	var b strings.Builder
	rule := func(kw string, a ACLRule) { fmt.Fprintf(&b, "%s %s %s\n", kw, a.Access, a.Topic) }
	for _, a := range rules {
		if a.User == "" && !a.Pattern {
			rule("topic", a)
		}
	}
	for _, a := range rules {
		if a.Pattern {
			rule("pattern", a)
		}
	}
	var users []string
	for _, a := range rules {
		if a.User != "" && !containsString(users, a.User) {
			users = append(users, a.User)
		}
	}
	for _, u := range users {
		fmt.Fprintf(&b, "\nuser %s\n", u)
		for _, a := range rules {
			if a.User == u {
				rule("topic", a)
			}
		}
	}
	return b.String()
}

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// hashPassword returns Mosquitto's $7$ hash: PBKDF2-HMAC-SHA512, 101
// iterations, 12-byte salt, as mosquitto_passwd writes it.
func hashPassword(password string) (string, error) {
	const iterations = 101
	salt := make([]byte, 12)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key, err := pbkdf2.Key(sha512.New, password, salt, iterations, sha512.Size)
	if err != nil {
		return "", err
	}
	enc := base64.StdEncoding
	return fmt.Sprintf("$7$%d$%s$%s", iterations, enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// writeFile replaces path atomically with mode 0600, never through a
// link planted there.
func writeFile(path, content string) error { return safefile.Write(path, []byte(content), 0o600) }
