package main

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"metad/init"
	"metad/netctl"
	"metad/supervise"
)

// controlSystem is the daemon as control sees it: control names metad's
// ends by its commands, initsys by what reboot(2) does.
type controlSystem struct{ *daemon }

// Shutdown asks the daemon to stop everything and end as f says.
func (s controlSystem) Shutdown(f netctl.Final) {
	end := initsys.Poweroff // shutdown: exit, or power off as PID 1 of a machine
	switch f {
	case netctl.Reboot:
		end = initsys.Reboot
	case netctl.Halt:
		end = initsys.Halt
	}
	s.daemon.Shutdown(end)
}

// serveControl starts the control servers: the local socket, and network
// control when a key file is present. They run until ctx is done; wait
// then blocks until they have stopped and the socket file is removed. It
// fails only when the local socket cannot be made, for instance because
// another metad serves it; a problem with network control is logged and
// leaves the local socket serving.
//
// handedFD and handedNet, when not negative, are the control socket and
// the network control socket handed over by the previous image of metad
// (re-exec), used instead of making new ones.
func serveControl(ctx context.Context, o *options, log zerolog.Logger, sup *supervise.Supervisor, d *daemon, handedFD, handedNet int) (wait func(), err error) {
	var wg sync.WaitGroup
	host, _ := os.Hostname()
	h := &netctl.Handler{
		Controller: sup,
		System:     controlSystem{d},
		Version:    version,
		Hostname:   host,
		Machine:    d.machine,
	}
	var local *netctl.Local
	if handedFD >= 0 {
		local, err = netctl.LocalFromFD(handedFD, o.socket)
	}
	if local == nil {
		if err != nil {
			log.Warn().Err(err).Msg("making a new control socket")
		}
		local, err = netctl.ListenLocal(o.socket)
	}
	if err != nil {
		return wg.Wait, err
	}
	d.local = local
	wg.Go(func() { netctl.ServeLocal(ctx, local, h, log) })
	log.Info().Str("socket", local.Path()).Msg("control socket listening")

	key, err := netctl.LoadKey(o.keyFile)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			log.Info().Str("key", o.keyFile).Msg("no key file: network control is off")
		} else {
			log.Error().Err(err).Msg("network control is off")
		}
		if handedNet >= 0 { // the key was removed before the re-exec
			unix.Close(handedNet)
		}
		return wg.Wait, nil
	}
	var conn *net.UDPConn
	if handedNet >= 0 {
		if conn, err = netctl.NetFromFD(handedNet); err != nil {
			log.Warn().Err(err).Msg("making a new network control socket")
		}
	}
	handedOver := conn != nil
	if conn == nil {
		if conn, err = netctl.ListenNet(o.port); err != nil {
			log.Error().Err(err).Msg("network control is off")
			return wg.Wait, nil
		}
	}
	srv := &netctl.Server{Handler: h, Key: key, Port: o.port, Log: log}
	d.netSrv = srv
	wg.Go(func() { srv.Serve(ctx, conn) })
	log.Info().Int("port", o.port).Bool("handed_over", handedOver).Msg("network control listening")
	return wg.Wait, nil
}
