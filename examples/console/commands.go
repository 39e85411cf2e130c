package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/artifacts"
	"github.com/edgekit/edgekit/edge/fleet/fleetapi"
	"github.com/edgekit/edgekit/function/codepkg"
)

const usage = `usage: console <command> [flags]

  serve                      run a fleet (see console serve -h)
  keygen FILE                write a signing key, print its public key
  app create NAME -kind function|container [-description D]
  app list
  version add APP VERSION (-dir DIR | -archive FILE | -image REF [-container JSON])
                             [-sign KEYFILE] [-config JSON] [-triggers JSON] [-probation 30s]
                             (-container: the rest of a container version, as JSON:
                             {"spec": {...}, "health": {...}, "restart": "...", "after": [...]})
  version list APP
  config set APP (-group G | -instance ID) JSON
  group set NAME SELECTOR
  instance list
  instance label ID [KEY=VALUE ...]
  instance logs ID APP [-limit N] [-contains TEXT]   an app's last lines, asked of the gateway
  deploy ID [-selector S] [-priority N] [-waves 1,10%,100%] [-bake D] [-success P]
            [-failure P] [-min-sample N] [-on-failure abort|pause] [-max-per-minute N]
            APP=VERSION ...
  rollout status|pause|resume|cancel ID [-rollback] [-reason R]
  user set NAME -role viewer|operator   (the password: the first line of standard input)
  user list
  audit [-day YYYY-MM-DD]
  pack DIR APP VERSION -o FILE  pack a function directory (to upload in the web console)
  sign FILE -sign KEYFILE       print the signature of a package (for the web console's form)
  logs FUNCTION -gateway URL -gateway-token-file F
  invoke FUNCTION [JSON] -gateway URL -gateway-token-file F`

func run(ctx context.Context, args []string, stdin io.Reader, out io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	cmd, rest := args[0], args[1:]
	if cmd == "serve" {
		return serve(ctx, rest, out)
	}
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") && (cmd == "app" || cmd == "version" || cmd == "config" || cmd == "group" || cmd == "instance" || cmd == "rollout" || cmd == "user") {
		cmd, rest = cmd+" "+rest[0], rest[1:]
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := &client{}
	fs.StringVar(&c.url, "url", envOr("EDGEKIT_FLEET_URL", "http://127.0.0.1:7700"), "the fleet's URL")
	tokenFile := fs.String("token-file", envOr("EDGEKIT_FLEET_TOKEN_FILE", filepath.Join("fleet", "api-token")), "the file holding the fleet's token")
	var (
		kind, description, dir, archive, image, containerJSON, sign, config, triggers, probation string
		group, instance, selector, waves, bake, onFailure, reason                                string
		gateway, gatewayToken                                                                    string
		role, day, output, contains                                                              string
		limit                                                                                    int
		priority, minSample, maxPerMinute                                                        int
		success, failure                                                                         float64
		rollback                                                                                 bool
	)
	fs.StringVar(&kind, "kind", "", "")
	fs.StringVar(&description, "description", "", "")
	fs.StringVar(&dir, "dir", "", "")
	fs.StringVar(&archive, "archive", "", "")
	fs.StringVar(&image, "image", "", "")
	fs.StringVar(&containerJSON, "container", "", "")
	fs.StringVar(&sign, "sign", "", "")
	fs.StringVar(&config, "config", "", "")
	fs.StringVar(&triggers, "triggers", "", "")
	fs.StringVar(&probation, "probation", "", "")
	fs.StringVar(&group, "group", "", "")
	fs.StringVar(&instance, "instance", "", "")
	fs.StringVar(&selector, "selector", "", "")
	fs.StringVar(&waves, "waves", "", "")
	fs.StringVar(&bake, "bake", "", "")
	fs.StringVar(&onFailure, "on-failure", "", "")
	fs.StringVar(&reason, "reason", "", "")
	fs.StringVar(&gateway, "gateway", "", "")
	fs.StringVar(&gatewayToken, "gateway-token-file", "", "")
	fs.StringVar(&role, "role", "", "")
	fs.StringVar(&day, "day", "", "")
	fs.StringVar(&output, "o", "", "")
	fs.StringVar(&contains, "contains", "", "")
	fs.IntVar(&limit, "limit", 0, "")
	fs.IntVar(&priority, "priority", 0, "")
	fs.IntVar(&minSample, "min-sample", 0, "")
	fs.IntVar(&maxPerMinute, "max-per-minute", 0, "")
	fs.Float64Var(&success, "success", 0, "")
	fs.Float64Var(&failure, "failure", 0, "")
	fs.BoolVar(&rollback, "rollback", false, "")
	pos, err := parseInterleaved(fs, rest)
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", cmd, err, usage)
	}
	need := func(n int, what string) error {
		if len(pos) < n {
			return fmt.Errorf("%s: want %s\n%s", cmd, what, usage)
		}
		return nil
	}
	switch cmd {
	case "keygen":
		return keygen(pos, out)
	case "pack":
		if err := need(3, "DIR APP VERSION"); err != nil {
			return err
		}
		return pack(pos[0], pos[1], pos[2], output, out)
	case "sign":
		if err := need(1, "FILE"); err != nil {
			return err
		}
		return signFile(pos[0], sign, out)
	}
	if cmd != "logs" && cmd != "invoke" {
		tok, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("the fleet's token: %w (set -token-file)", err)
		}
		c.token = strings.TrimSpace(string(tok))
	}
	switch cmd {
	case "app create":
		if err := need(1, "NAME"); err != nil {
			return err
		}
		return c.print(ctx, out, "POST", "/v1/apps", map[string]string{"name": pos[0], "kind": kind, "description": description})
	case "app list":
		return c.print(ctx, out, "GET", "/v1/apps", nil)
	case "version add":
		if err := need(2, "APP VERSION"); err != nil {
			return err
		}
		v, err := c.version(ctx, pos[0], pos[1], dir, archive, image, containerJSON, sign, config, triggers, probation)
		if err != nil {
			return err
		}
		return c.print(ctx, out, "POST", "/v1/apps/"+url.PathEscape(pos[0])+"/versions", v)
	case "version list":
		if err := need(1, "APP"); err != nil {
			return err
		}
		return c.print(ctx, out, "GET", "/v1/apps/"+url.PathEscape(pos[0])+"/versions", nil)
	case "config set":
		if err := need(2, "APP JSON"); err != nil {
			return err
		}
		q := url.Values{}
		if group != "" {
			q.Set("group", group)
		}
		if instance != "" {
			q.Set("instance", instance)
		}
		return c.print(ctx, out, "PUT", "/v1/apps/"+url.PathEscape(pos[0])+"/config?"+q.Encode(), json.RawMessage(pos[1]))
	case "group set":
		if err := need(2, "NAME SELECTOR"); err != nil {
			return err
		}
		return c.print(ctx, out, "PUT", "/v1/groups/"+url.PathEscape(pos[0]), map[string]string{"selector": pos[1]})
	case "instance list":
		return c.print(ctx, out, "GET", "/v1/instances", nil)
	case "instance label":
		if err := need(1, "ID"); err != nil {
			return err
		}
		labels, err := fleet.ParseLabels(pos[1:]...)
		if err != nil {
			return fmt.Errorf("instance label: %w", err)
		}
		return c.print(ctx, out, "PUT", "/v1/instances/"+url.PathEscape(pos[0]), map[string]any{"labels": labels})
	case "instance logs":
		if err := need(2, "ID APP"); err != nil {
			return err
		}
		q := url.Values{"app": {pos[1]}}
		if limit > 0 {
			q.Set("limit", strconv.Itoa(limit))
		}
		if contains != "" {
			q.Set("contains", contains)
		}
		return c.print(ctx, out, "GET", "/v1/instances/"+url.PathEscape(pos[0])+"/logs?"+q.Encode(), nil)
	case "deploy":
		if err := need(2, "ID APP=VERSION ..."); err != nil {
			return err
		}
		req := fleetapi.DeploymentRequest{ID: pos[0], Selector: selector, Priority: priority,
			Policy: fleet.Policy{SuccessPercent: success, FailurePercent: failure, MinSample: minSample, OnFailure: onFailure, MaxPerMinute: maxPerMinute}}
		if req.Apps, err = fleet.ParseAppVersions(pos[1:]...); err != nil {
			return fmt.Errorf("deploy: %w", err)
		}
		if req.Policy.Waves, err = fleet.ParseWaves(waves); err != nil {
			return fmt.Errorf("deploy: -waves: %w", err)
		}
		if bake != "" {
			d, err := time.ParseDuration(bake)
			if err != nil {
				return fmt.Errorf("deploy: -bake: %w", err)
			}
			req.Policy.Bake = app.Duration(d)
		}
		return c.print(ctx, out, "POST", "/v1/deployments", req)
	case "rollout status", "rollout pause", "rollout resume", "rollout cancel":
		if err := need(1, "ID"); err != nil {
			return err
		}
		path := "/v1/deployments/" + url.PathEscape(pos[0])
		switch strings.TrimPrefix(cmd, "rollout ") {
		case "status":
			return c.print(ctx, out, "GET", path, nil)
		case "pause":
			return c.print(ctx, out, "POST", path+"/pause", map[string]string{"reason": reason})
		case "resume":
			return c.print(ctx, out, "POST", path+"/resume", nil)
		default:
			return c.print(ctx, out, "POST", path+"/cancel", map[string]bool{"rollback": rollback})
		}
	case "user set":
		if err := need(1, "NAME"); err != nil {
			return err
		}
		if stdin == nil {
			return errors.New("user set: the password is read from standard input")
		}
		password, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("user set: reading the password from standard input: %w", err)
		}
		return c.print(ctx, out, "PUT", "/v1/users/"+url.PathEscape(pos[0]), map[string]string{"password": strings.TrimRight(password, "\r\n"), "role": role})
	case "user list":
		return c.print(ctx, out, "GET", "/v1/users", nil)
	case "audit":
		q := ""
		if day != "" {
			q = "?day=" + url.QueryEscape(day)
		}
		return c.print(ctx, out, "GET", "/v1/audit"+q, nil)
	case "logs", "invoke":
		if err := need(1, "FUNCTION"); err != nil {
			return err
		}
		tok, err := os.ReadFile(gatewayToken)
		if gateway == "" || err != nil {
			return fmt.Errorf("%s: -gateway URL and -gateway-token-file (the gateway's api-token) are needed: %v", cmd, err)
		}
		g := &client{url: gateway, token: strings.TrimSpace(string(tok))}
		if cmd == "logs" {
			return g.print(ctx, out, "GET", "/v1/functions/"+url.PathEscape(pos[0])+"/logs", nil)
		}
		payload := json.RawMessage("{}")
		if len(pos) > 1 {
			payload = json.RawMessage(pos[1])
		}
		return g.print(ctx, out, "POST", "/v1/functions/"+url.PathEscape(pos[0])+"/invoke", payload)
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

// parseInterleaved parses flags that may come before, between or after
// the positional arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// client calls an HTTP API with a token.
type client struct {
	url, token string
}

func (c *client) do(ctx context.Context, method, path string, body io.Reader) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.url, "/")+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Error)
		}
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

func (c *client) call(ctx context.Context, method, path string, v any) ([]byte, error) {
	var body io.Reader
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	return c.do(ctx, method, path, body)
}

func (c *client) print(ctx context.Context, out io.Writer, method, path string, v any) error {
	b, err := c.call(ctx, method, path, v)
	if err != nil {
		return err
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, b, "", "  ") != nil {
		pretty.Write(b)
	}
	_, err = fmt.Fprintln(out, strings.TrimSpace(pretty.String()))
	return err
}

// version makes an app version: a function's package packed from a
// directory (or taken as an archive), uploaded to the fleet's artifact
// server and, with a key, signed; or a container's image.
func (c *client) version(ctx context.Context, appName, version, dir, archive, image, containerJSON, sign, config, triggers, probation string) (app.Version, error) {
	form := fleet.VersionForm{Version: version, Image: image, Container: containerJSON, Triggers: triggers, Config: config, Probation: probation}
	if containerJSON != "" && image == "" {
		return app.Version{}, errors.New("version add: -container needs -image")
	}
	if image == "" {
		pkg, err := c.upload(ctx, appName, version, dir, archive, sign)
		if err != nil {
			return app.Version{}, err
		}
		form.Package = &pkg
	}
	v, err := form.Build()
	if err != nil {
		return v, fmt.Errorf("version add: %w", err)
	}
	return v, nil
}

// upload packs dir (or takes archive), uploads it to the fleet's artifact
// server, signs its digest with the key in sign (if given) and records
// its manifest: the artifact a function version names.
func (c *client) upload(ctx context.Context, appName, version, dir, archive, sign string) (app.Artifact, error) {
	if dir != "" {
		tmp, err := os.MkdirTemp("", "console-pack-")
		if err != nil {
			return app.Artifact{}, err
		}
		defer os.RemoveAll(tmp)
		p, err := codepkg.Pack(dir, tmp, appName, version)
		if err != nil {
			return app.Artifact{}, fmt.Errorf("packing %s: %w", dir, err)
		}
		archive = p.Path
	}
	if archive == "" {
		return app.Artifact{}, errors.New("version add: one of -dir, -archive or -image is needed")
	}
	f, err := os.Open(archive)
	if err != nil {
		return app.Artifact{}, err
	}
	defer f.Close()
	b, err := c.do(ctx, "PUT", "/v1/blobs", f)
	if err != nil {
		return app.Artifact{}, fmt.Errorf("uploading %s: %w", archive, err)
	}
	var blob artifacts.Blob
	if err := json.Unmarshal(b, &blob); err != nil {
		return app.Artifact{}, err
	}
	m := artifacts.Manifest{App: appName, Version: version, SHA256: blob.SHA256, Size: blob.Size}
	if sign != "" {
		key, err := readKey(sign)
		if err != nil {
			return app.Artifact{}, err
		}
		digest, _ := hex.DecodeString(blob.SHA256)
		m.Signatures = [][]byte{ed25519.Sign(key, digest)}
	}
	if _, err := c.call(ctx, "PUT", "/v1/manifests/"+url.PathEscape(appName)+"/"+url.PathEscape(version), m); err != nil {
		return app.Artifact{}, err
	}
	return m.Artifact(strings.TrimSuffix(c.url, "/")), nil
}

// pack writes a function directory's package to file.
func pack(dir, appName, version, file string, out io.Writer) error {
	if file == "" {
		return errors.New("pack: -o FILE is needed")
	}
	tmp, err := os.MkdirTemp("", "console-pack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	p, err := codepkg.Pack(dir, tmp, appName, version)
	if err != nil {
		return fmt.Errorf("packing %s: %w", dir, err)
	}
	b, err := os.ReadFile(p.Path)
	if err != nil {
		return err
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		return err
	}
	fmt.Fprintln(out, file)
	return nil
}

// signFile prints the signature of a package's SHA-256 with the key in
// keyFile, in hex.
func signFile(file, keyFile string, out io.Writer) error {
	if keyFile == "" {
		return errors.New("sign: -sign KEYFILE is needed")
	}
	key, err := readKey(keyFile)
	if err != nil {
		return err
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	fmt.Fprintln(out, hex.EncodeToString(ed25519.Sign(key, h.Sum(nil))))
	return nil
}

// keygen writes a new ed25519 signing key (its seed, in hex) to a file
// only its owner reads, and prints the public key in hex.
func keygen(args []string, out io.Writer) error {
	if len(args) != 1 {
		return errors.New("keygen FILE")
	}
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(args[0], os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, hex.EncodeToString(priv.Seed())); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, hex.EncodeToString(pub))
	return err
}

func readKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s: want a %d-byte ed25519 seed in hex (console keygen writes one)", path, ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
