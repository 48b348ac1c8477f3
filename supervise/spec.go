package supervise

import (
	"io/fs"
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
	path     string
	argv     []string
	env      []string
	envFiles []conffmt.EnvFile // read at each start: they override env
	fixed    []string          // set after the env files: a listener's LISTEN_ variables
	dir      string
	cred     *syscall.Credential
	umask    *fs.FileMode
	nice     *int
	rlimits  []initsys.Rlimit
}

// newSpec prepares the exec parameters of c on top of the environment base.
func newSpec(c *conffmt.Service, base []string) *spec {
	env := make([]string, 0, len(base)+len(c.Env))
	env = append(env, base...)
	env = append(env, c.Env...)
	var rlimits []initsys.Rlimit
	for _, l := range c.Limits {
		rlimits = append(rlimits, initsys.Rlimit(l))
	}
	return &spec{
		path:     c.Path,
		argv:     c.Argv(),
		env:      mergeEnv(env),
		envFiles: c.EnvFiles,
		dir:      c.Dir,
		cred:     credential(c.User),
		umask:    c.Umask,
		nice:     c.Nice,
		rlimits:  rlimits,
	}
}

// listener returns the spec of a listener service: metad's own binary as
// the shim (see ExecShim), with the socket-activation environment.
func (sp *spec) listener(shim, name string) *spec {
	l := *sp
	l.path = shim
	l.argv = sp.shimArgv()
	l.fixed = []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=" + name}
	l.env = mergeEnv(append(append([]string{}, sp.env...), l.fixed...))
	return &l
}

// environ returns the environment of an instance started now: env, then
// the variables of the env files, read now, then the fixed ones; a later
// NAME wins, as for env=. Without env files it is env, and costs nothing.
func (sp *spec) environ() ([]string, error) {
	if len(sp.envFiles) == 0 {
		return sp.env, nil
	}
	vars, err := conffmt.ReadEnvFiles(sp.envFiles)
	if err != nil {
		return nil, err
	}
	env := make([]string, 0, len(sp.env)+len(vars)+len(sp.fixed))
	env = append(append(append(env, sp.env...), vars...), sp.fixed...)
	return mergeEnv(env), nil
}

// proc returns the Proc for one instance with the given descriptors. It
// fails when an env file cannot be read: the start fails as an exec would.
func (sp *spec) proc(files []int) (*initsys.Proc, error) {
	env, err := sp.environ()
	if err != nil {
		return nil, err
	}
	return &initsys.Proc{
		Path:    sp.path,
		Argv:    sp.argv,
		Env:     env,
		Dir:     sp.dir,
		Files:   files,
		Cred:    sp.cred,
		Setsid:  true,
		Umask:   sp.umask,
		Nice:    sp.nice,
		Rlimits: sp.rlimits,
	}, nil
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
