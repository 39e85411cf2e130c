//go:build !nopodman

package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/container/podman"
)

// webImage is the container app's image, made here from its binary.
const webImage = "localhost/edgekit-example-web:1"

// containerRuntime connects to podman and makes the container app's image
// from its binary when podman lacks it (no registry is needed).
func containerRuntime(ctx context.Context, cfg config) (container.Runtime, error) {
	if cfg.Podman == "" {
		return nil, errors.New("no podman service configured")
	}
	if path, ok := strings.CutPrefix(cfg.Podman, "unix://"); ok {
		if _, err := os.Stat(path); err != nil {
			return nil, err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rt, err := podman.Connect(cctx, cfg.Podman)
	if err != nil {
		return nil, err
	}
	if ok, err := rt.ImageExists(cctx, webImage); err != nil {
		return nil, err
	} else if ok {
		return rt, nil
	}
	bin, err := os.ReadFile(cfg.WebApp)
	if err != nil {
		return nil, fmt.Errorf("the container app's binary (make gateway builds it): %w", err)
	}
	var rootfs bytes.Buffer
	tw := tar.NewWriter(&rootfs)
	if err := tw.WriteHeader(&tar.Header{Name: "web", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	_, _ = tw.Write(bin)
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := rt.ImportImage(ctx, webImage, &rootfs); err != nil {
		return nil, fmt.Errorf("importing %s: %w", webImage, err)
	}
	return rt, nil
}
