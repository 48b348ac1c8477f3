package conffmt

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// fakeResolver is a host with a few users, programs and port names, so
// that tests do not depend on the machine they run on.
func fakeResolver() *Resolver {
	users := map[string]*Credential{
		"root": {UID: 0, GID: 0, Groups: []uint32{0}},
		"www":  {UID: 33, GID: 33, Groups: []uint32{33, 100}},
	}
	groups := map[string]uint32{"root": 0, "adm": 4}
	programs := map[string]string{
		"sh":              "/bin/sh",
		"cat":             "/bin/cat",
		"nginx":           "/usr/sbin/nginx",
		"/usr/sbin/nginx": "/usr/sbin/nginx",
		"/bin/sh":         "/bin/sh",
	}
	ports := map[string]int{"http": 80, "daytime": 13, "huge": 70000}
	return &Resolver{
		LookupUser: func(spec string) (*Credential, error) {
			name, group, hasGroup := strings.Cut(spec, ":")
			c := &Credential{User: name, Group: group}
			if id, err := strconv.ParseUint(name, 10, 32); err == nil {
				c.UID, c.GID = uint32(id), uint32(id)
			} else if u, ok := users[name]; ok {
				c.UID, c.GID, c.Groups = u.UID, u.GID, u.Groups
			} else {
				return nil, fmt.Errorf("unknown user %q", name)
			}
			if !hasGroup {
				return c, nil
			}
			c.Groups = nil
			if id, err := strconv.ParseUint(group, 10, 32); err == nil {
				c.GID = uint32(id)
			} else if gid, ok := groups[group]; ok {
				c.GID = gid
			} else {
				return nil, fmt.Errorf("unknown group %q", group)
			}
			return c, nil
		},
		LookPath: func(program string) (string, error) {
			if p, ok := programs[program]; ok {
				return p, nil
			}
			if filepath.IsAbs(program) {
				return "", fmt.Errorf("program %q not found", program)
			}
			return "", fmt.Errorf("program %q not found in PATH", program)
		},
		LookupPort: func(name string) (int, error) {
			if p, ok := ports[name]; ok {
				return p, nil
			}
			return 0, fmt.Errorf("unknown port %q", name)
		},
	}
}

// acceptingResolver accepts every user, program and port name, and
// resolves each the same way every time.
func acceptingResolver() *Resolver {
	return &Resolver{
		LookupUser: func(spec string) (*Credential, error) {
			name, group, _ := strings.Cut(spec, ":")
			id := uint32(len(name))
			return &Credential{User: name, Group: group, UID: id, GID: id + uint32(len(group))}, nil
		},
		LookPath: func(program string) (string, error) {
			if filepath.IsAbs(program) {
				return program, nil
			}
			return "/fake/bin/" + program, nil
		},
		LookupPort: func(name string) (int, error) { return 1 + len(name)%65535, nil },
	}
}
