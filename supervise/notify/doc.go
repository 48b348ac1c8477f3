// Package notify speaks the sd_notify protocol (sd_notify(3)), both
// sides, as systemd's service manager does.
//
// The receiving side is for ready=notify services: Listen binds a
// datagram socket of the service's own, whose Addr is the NOTIFY_SOCKET
// the program is given; Recv reads one datagram at a time without
// blocking, with the sender's credentials, and Parse turns its text into
// a Message. The sending side, Send, is for metad telling its own parent
// (systemd's Type=notify, podman's --sdnotify) that it is ready.
//
// What it owns: the wire format, exactly as systemd reads it (the same
// splitting, the same first-one-wins rule, the same number syntax, the
// same limit of 4096 bytes), and the sockets. What it does not: deciding
// whether a sender belongs to the service (the caller compares the
// credentials with its instances), what a message means for a service's
// state (STOPPING=1 wins over READY=1, READY=1 over RELOADING=1, as
// systemd decides; the caller applies that), timers, and file descriptor
// stores: descriptors sent along with a notification are closed as it is
// read, which is also what completes a sender's sd_notify_barrier(3).
package notify
