package conffmt

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// Resolver does the host lookups that checking a config needs. A nil
// field, or a nil *Resolver, means the system's: ResolveUser (os/user, which
// without cgo reads /etc/passwd and /etc/group), LookPath (exec.LookPath
// with the process's PATH, or a check of an absolute path) and
// net.LookupPort("tcp", name) (/etc/services).
//
// Each function's error text becomes the message of a config error, as is:
// it should name the thing not found (`unknown user "www"`) and not the
// file or line, which Parse adds. The functions may be called from one
// goroutine at a time, in file order.
type Resolver struct {
	// LookupUser resolves spec, "USER" or "USER:GROUP" as written in a
	// user= option.
	LookupUser func(spec string) (*Credential, error)
	// LookPath resolves a program as written, an absolute path or a name
	// without a slash, to the absolute path of an executable file.
	LookPath func(program string) (string, error)
	// LookupPort resolves a TCP service name, never a number, to a port.
	LookupPort func(name string) (int, error)
}

func (r *Resolver) lookupUser(spec string) (*Credential, error) {
	if r == nil || r.LookupUser == nil {
		return ResolveUser(spec)
	}
	return r.LookupUser(spec)
}

func (r *Resolver) lookPath(program string) (string, error) {
	if r == nil || r.LookPath == nil {
		return lookPath(program)
	}
	return r.LookPath(program)
}

func (r *Resolver) lookupPort(name string) (int, error) {
	if r == nil || r.LookupPort == nil {
		return lookupPort(name)
	}
	return r.LookupPort(name)
}

// ResolveUser resolves spec, "USER" or "USER:GROUP", on this host. USER
// and GROUP are names or numbers.
//
// A named user must exist; a numeric user need not, since a scratch
// container may have no /etc/passwd: it then runs with GID = UID and no
// supplementary groups. A user with a passwd entry gets its primary group
// and its supplementary groups from /etc/group (just the primary group
// when there is no /etc/group). An explicit GROUP, which must exist when
// it is a name, replaces the primary group and drops the supplementary
// ones. The error texts read like `unknown user "www"`.
func ResolveUser(spec string) (*Credential, error) {
	name, group, hasGroup := strings.Cut(spec, ":")
	if name == "" || hasGroup && group == "" {
		return nil, fmt.Errorf("invalid user %q: want USER or USER:GROUP", spec)
	}
	c := &Credential{User: name, Group: group}
	var u *user.User
	var err error
	if id, ok := parseID(name); ok {
		c.UID, c.GID = id, id
		u, err = user.LookupId(name)
		if errors.As(err, new(user.UnknownUserIdError)) {
			u, err = nil, nil
		}
	} else {
		u, err = user.Lookup(name)
		if errors.As(err, new(user.UnknownUserError)) {
			return nil, fmt.Errorf("unknown user %q", name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cannot look up user %q: %w", name, err)
	}
	if u != nil {
		if err := fillUser(c, u); err != nil {
			return nil, err
		}
	}
	if !hasGroup {
		return c, nil
	}
	c.Groups = nil
	if id, ok := parseID(group); ok {
		c.GID = id
		return c, nil
	}
	g, err := user.LookupGroup(group)
	if errors.As(err, new(user.UnknownGroupError)) {
		return nil, fmt.Errorf("unknown group %q", group)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot look up group %q: %w", group, err)
	}
	if c.GID, err = parseGID(g.Gid); err != nil {
		return nil, err
	}
	return c, nil
}

// fillUser sets c's numbers and groups from the passwd entry u.
func fillUser(c *Credential, u *user.User) error {
	uid, ok := parseID(u.Uid)
	if !ok {
		return fmt.Errorf("cannot use user %q: uid %q is not a number", c.User, u.Uid)
	}
	gid, err := parseGID(u.Gid)
	if err != nil {
		return err
	}
	c.UID, c.GID, c.Groups = uid, gid, []uint32{gid}
	ids, err := u.GroupIds()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot list the groups of user %q: %w", c.User, err)
	}
	c.Groups = c.Groups[:0]
	for _, s := range ids {
		gid, err := parseGID(s)
		if err != nil {
			return err
		}
		c.Groups = append(c.Groups, gid)
	}
	return nil
}

// parseID parses a user or group number: 0 to 2^32-2 (2^32-1 is -1, "no
// id", to the kernel).
func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 1<<32-1 {
		return 0, false
	}
	return uint32(n), true
}

func parseGID(s string) (uint32, error) {
	id, ok := parseID(s)
	if !ok {
		return 0, fmt.Errorf("cannot use group id %q: not a number", s)
	}
	return id, nil
}

// lookPath is the system Resolver.LookPath: an absolute program must be
// an executable regular file; a name is looked up in PATH.
func lookPath(program string) (string, error) {
	if !filepath.IsAbs(program) {
		p, err := exec.LookPath(program)
		if err != nil || !filepath.IsAbs(p) {
			return "", fmt.Errorf("program %q not found in PATH", program)
		}
		return p, nil
	}
	fi, err := os.Stat(program)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("program %q not found", program)
	case err != nil:
		return "", fmt.Errorf("cannot check program %q: %w", program, err)
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("program %q is not a regular file", program)
	case fi.Mode().Perm()&0o111 == 0:
		return "", fmt.Errorf("program %q is not executable", program)
	}
	return program, nil
}

// lookupPort is the system Resolver.LookupPort.
func lookupPort(name string) (int, error) {
	p, err := net.LookupPort("tcp", name)
	if err != nil {
		return 0, fmt.Errorf("unknown port %q: not a number or a TCP service in /etc/services", name)
	}
	return p, nil
}
