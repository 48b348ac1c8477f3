package supervise

import (
	"os"
	"strings"
	"syscall"

	"metad/conffmt"
	"metad/init"
)

// spec is everything needed to start an instance of a service, worked out
// once per config so that starting one (for a stream: once per connection)
// does no lookups and builds no strings.
type spec struct {
	path string
	argv []string
	env  []string
	dir  string
	cred *syscall.Credential
}

// newSpec prepares the exec parameters of c on top of the environment base.
func newSpec(c *conffmt.Service, base []string) *spec {
	env := make([]string, 0, len(base)+len(c.Env))
	env = append(env, base...)
	env = append(env, c.Env...)
	return &spec{
		path: c.Path,
		argv: c.Argv(),
		env:  mergeEnv(env),
		dir:  c.Dir,
		cred: credential(c.User),
	}
}

// listener returns the spec of a listener service: metad's own binary as
// the shim (see ExecShim), with the socket-activation environment.
func (sp *spec) listener(shim, name string) *spec {
	l := *sp
	l.path = shim
	l.argv = sp.shimArgv()
	l.env = mergeEnv(append(append([]string{}, sp.env...), "LISTEN_FDS=1", "LISTEN_FDNAMES="+name))
	return &l
}

// proc returns the Proc for one instance with the given descriptors.
func (sp *spec) proc(files []int) *initsys.Proc {
	return &initsys.Proc{
		Path:   sp.path,
		Argv:   sp.argv,
		Env:    sp.env,
		Dir:    sp.dir,
		Files:  files,
		Cred:   sp.cred,
		Setsid: true,
	}
}

// mergeEnv keeps the last value of each NAME, in the order names first
// appear, so that env= in the config overrides metad's environment.
func mergeEnv(env []string) []string {
	index := make(map[string]int, len(env))
	out := env[:0:0]
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if i, ok := index[name]; ok {
			out[i] = kv
			continue
		}
		index[name] = len(out)
		out = append(out, kv)
	}
	return out
}

// credential converts a config user to what the kernel needs. When metad
// is not root it cannot call setgroups(2), so a service that names metad's
// own user keeps metad's groups instead of failing to start.
func credential(u *conffmt.Credential) *syscall.Credential {
	if u == nil {
		return nil
	}
	c := &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}
	if os.Geteuid() != 0 {
		c.NoSetGroups = true
	}
	return c
}
