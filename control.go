package main

import (
	"context"

	"github.com/rs/zerolog"

	"metad/supervise"
)

// startControl starts the control servers: the local socket, and network
// control when a key file is present. They run until ctx is done.
func startControl(ctx context.Context, o *options, log zerolog.Logger, sup *supervise.Supervisor, d *daemon) error {
	return nil
}
