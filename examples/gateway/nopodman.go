//go:build nopodman

package main

import (
	"context"
	"errors"

	"github.com/edgekit/edgekit/container"
)

// containerRuntime: built with -tags nopodman, the gateway has none (its
// size and memory are then measured without the podman backend).
func containerRuntime(context.Context, config) (container.Runtime, error) {
	return nil, errors.New("built without the podman backend")
}
