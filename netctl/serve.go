package netctl

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// ServeConfig is what Serve needs to start metad's control servers.
type ServeConfig struct {
	Handler *Handler
	Log     zerolog.Logger
	// Socket is the path of the local control socket. LocalFD, when not
	// negative, is that socket handed over by the previous image of
	// metad (re-exec), used instead of making a new one.
	Socket  string
	LocalFD int
	// KeyFile is network control's key: no such file, no network
	// control. Port is its UDP port; NetworkFD, when not negative, its
	// socket handed over by the previous image (closed when the key is
	// gone).
	KeyFile   string
	Port      int
	NetworkFD int
	// Also are more servers that run beside control and stop with it
	// (the metrics): each runs until its context is done.
	Also []func(ctx context.Context)
}

// Servers are the running control servers of one metad.
type Servers struct {
	Local   *Local  // the local control socket
	Network *Server // network control; nil when it is off
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// Serve starts the control servers: the local socket (the one handed
// over, else a new one) and, when the key file is present, network
// control (its socket handed over, else a new one), and the servers of
// c.Also. Only the local socket's failure is an error, and then nothing
// runs; a problem with network control is logged and leaves the local
// socket serving. Close stops them all.
func Serve(c ServeConfig) (*Servers, error) {
	log := c.Log
	var local *Local
	var err error
	if c.LocalFD >= 0 {
		if local, err = LocalFromFD(c.LocalFD, c.Socket); err != nil {
			log.Warn().Err(err).Msg("making a new control socket")
		}
	}
	if local == nil {
		if local, err = ListenLocal(c.Socket); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Servers{Local: local, cancel: cancel}
	s.wg.Go(func() { ServeLocal(ctx, local, c.Handler, log) })
	log.Info().Str("socket", local.Path()).Msg("control socket listening")
	for _, run := range c.Also {
		s.wg.Go(func() { run(ctx) })
	}

	key, err := LoadKey(c.KeyFile)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			log.Debug().Str("key", c.KeyFile).Msg("no key file: network control is off")
		} else {
			log.Error().Err(err).Msg("network control is off")
		}
		if c.NetworkFD >= 0 { // the key was removed before the re-exec
			unix.Close(c.NetworkFD)
		}
		return s, nil
	}
	var conn *net.UDPConn
	if c.NetworkFD >= 0 {
		if conn, err = NetFromFD(c.NetworkFD); err != nil {
			log.Warn().Err(err).Msg("making a new network control socket")
		}
	}
	handedOver := conn != nil
	if conn == nil {
		if conn, err = ListenNet(c.Port); err != nil {
			log.Error().Err(err).Msg("network control is off")
			return s, nil
		}
	}
	s.Network = &Server{Handler: c.Handler, Key: key, Port: c.Port, Log: log}
	s.wg.Go(func() { s.Network.Serve(ctx, conn) })
	log.Info().Int("port", c.Port).Bool("handed_over", handedOver).Msg("network control listening")
	return s, nil
}

// Close stops every server Serve started and returns when they have
// stopped and the socket file is removed.
func (s *Servers) Close() {
	s.cancel()
	s.wg.Wait()
}
