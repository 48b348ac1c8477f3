package conffmt

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Defaults and limits of the option values.
const (
	maxCount       = 1_000_000 // the largest min, max and backlog
	defaultBacklog = 128
	defaultStreams = 128 // a stream's max
	defaultCrash   = 10 * time.Second
	defaultBackoff = 5 * time.Minute
	defaultDir     = "/"
	defaultStop    = syscall.SIGTERM
)

// classSet is a set of classes, one bit per Class.
type classSet uint8

const (
	daemons   = classSet(1 << Daemon)
	listeners = classSet(1 << Listener)
	streams   = classSet(1 << Stream)
	sockets   = listeners | streams
	every     = daemons | listeners | streams
)

func (cs classSet) has(c Class) bool { return c < 8 && cs&(1<<c) != 0 }

// optionID names an option by its place in the options table, which is
// also the order in which Print writes options.
type optionID int

const (
	optMin optionID = iota
	optMax
	optPeriod
	optPort
	optAddr
	optBacklog
	optDir
	optUser
	optPidfile
	optWatch
	optEnabled
	optEnv
	optEnvFile
	optCrash
	optBackoff
	optStop
	optArgv0
	optUmask
	optNice
	optLimit
	optReady
	optReadyTimeout
	optAfter
	optNeeds
	optRestart
	optRetries
	optOnFailure
	optOnSuccess
	optStopTimeout
	optCheck
	optCheckEvery
	optCheckTimeout
	optCheckFails
	optWatchdog
	optQuiet
	optPerSource
	optRate
	optOnlyFrom
	numOptions
)

// An option is one entry of the options table: everything the parser and
// the printer know about one key.
type option struct {
	key     string   // the key before '=', and the option's name in messages
	classes classSet // the classes the option applies to
	bare    string   // the value a bare key means ("" when a value is required)
	negated string   // a bare word that means key=no ("" for none)
	repeat  bool     // may be given more than once

	// set checks val and stores it in s, whose Class is already known (0
	// when the class word was bad). Its error is the whole message.
	set func(r *Resolver, s *Service, val string) error
	// def stores the default in s when the option is not given; nil when
	// the zero value is the default. It runs after the program is known.
	def func(s *Service)
	// print returns the values to write as key=value words, in order;
	// none when the option has no value to write (an unset user).
	print func(s *Service) []string
	// check, if not nil, checks on this host what set stored last, as a
	// start would use it: only Check (metad -n) runs it, since a start
	// reads it again anyway. Each error becomes one config error.
	check func(s *Service) []error
}

// options is the table of every option, indexed by optionID. It is never
// written to.
var options = [numOptions]option{
	optMin: {
		key: "min", classes: daemons | listeners,
		set: func(_ *Resolver, s *Service, val string) (err error) {
			if s.Class == Listener {
				s.Min, err = parseCount("min", val, 0, 1)
				return err
			}
			s.Min, err = parseCount("min", val, 0, maxCount)
			return err
		},
		def: func(s *Service) {
			if s.Class == Daemon {
				s.Min = 1
			}
		},
		print: func(s *Service) []string { return []string{strconv.Itoa(s.Min)} },
	},
	optMax: {
		key: "max", classes: every,
		set: func(_ *Resolver, s *Service, val string) (err error) {
			s.Max, err = parseCount("max", val, 1, maxCount)
			if err == nil && s.Class == Listener && s.Max != 1 {
				return fmt.Errorf("invalid max %q: a listener runs one process at a time, so max is 1", val)
			}
			return err
		},
		def: func(s *Service) {
			switch s.Class {
			case Daemon:
				s.Max = max(s.Min, 1)
			case Listener:
				s.Max = 1
			case Stream:
				s.Max = defaultStreams
			}
		},
		print: func(s *Service) []string { return []string{strconv.Itoa(s.Max)} },
	},
	optPeriod: durationOption("period", daemons, 0, false, func(s *Service) *time.Duration { return &s.Period }),
	optPort: {
		key: "port", classes: sockets,
		set:   func(r *Resolver, s *Service, val string) (err error) { s.Port, err = parsePort(r, val); return err },
		print: func(s *Service) []string { return []string{strconv.Itoa(s.Port)} },
	},
	optAddr: {
		key: "addr", classes: sockets,
		set: func(_ *Resolver, s *Service, val string) error {
			a, err := netip.ParseAddr(val)
			if err != nil {
				return fmt.Errorf("invalid addr %q: want an IPv4 or IPv6 address", val)
			}
			s.Addr = a
			return nil
		},
		print: func(s *Service) []string {
			if !s.Addr.IsValid() {
				return nil
			}
			return []string{s.Addr.String()}
		},
	},
	optBacklog: countOption("backlog", sockets, 1, defaultBacklog, func(s *Service) *int { return &s.Backlog }),
	optDir:     pathOption("dir", every, defaultDir, func(s *Service) *string { return &s.Dir }),
	optUser: {
		key: "user", classes: every,
		set: func(r *Resolver, s *Service, val string) (err error) {
			s.User, err = r.lookupUser(val)
			return err
		},
		print: func(s *Service) []string {
			if s.User == nil {
				return nil
			}
			if s.User.Group != "" {
				return []string{s.User.User + ":" + s.User.Group}
			}
			return []string{s.User.User}
		},
	},
	optPidfile: pathOption("pidfile", daemons, "", func(s *Service) *string { return &s.Pidfile }),
	optWatch:   boolOption("watch_output", "", false, func(s *Service) *bool { return &s.Watch }),
	optEnabled: boolOption("enabled", "disabled", true, func(s *Service) *bool { return &s.Enabled }),
	optEnv: {
		key: "env", classes: every, repeat: true,
		set: func(_ *Resolver, s *Service, val string) error {
			name, _, ok := strings.Cut(val, "=")
			if !ok || !validEnvName(name) {
				return fmt.Errorf("invalid env %q: want NAME=VALUE, NAME made of letters, digits and _ and not starting with a digit", val)
			}
			s.Env = append(s.Env, val)
			return nil
		},
		print: func(s *Service) []string { return s.Env },
	},
	optEnvFile: {
		key: "env_file", classes: every, repeat: true,
		set: func(_ *Resolver, s *Service, val string) error {
			path, optional := strings.CutPrefix(val, "-")
			if !filepath.IsAbs(path) {
				return fmt.Errorf("invalid env_file %q: want an absolute path, or -PATH for a file that may not exist", val)
			}
			s.EnvFiles = append(s.EnvFiles, EnvFile{Path: path, Optional: optional})
			return nil
		},
		print: func(s *Service) []string {
			out := make([]string, len(s.EnvFiles))
			for i, f := range s.EnvFiles {
				if f.Optional {
					out[i] = "-"
				}
				out[i] += f.Path
			}
			return out
		},
		check: func(s *Service) []error { return checkEnvFile(s.EnvFiles[len(s.EnvFiles)-1]) },
	},
	optCrash:   durationOption("crash", every, defaultCrash, true, func(s *Service) *time.Duration { return &s.Crash }),
	optBackoff: durationOption("backoff", every, defaultBackoff, true, func(s *Service) *time.Duration { return &s.Backoff }),
	optStop: {
		key: "stop", classes: every,
		set:   func(_ *Resolver, s *Service, val string) (err error) { s.Stop, err = parseStop(val); return err },
		def:   func(s *Service) { s.Stop = defaultStop },
		print: func(s *Service) []string { return []string{signalName(s.Stop)} },
	},
	optArgv0: {
		key: "argv0", classes: every,
		set: func(_ *Resolver, s *Service, val string) error {
			if val == "" {
				return fmt.Errorf("invalid argv0 \"\": want a non-empty name")
			}
			s.Argv0 = val
			return nil
		},
		def:   func(s *Service) { s.Argv0 = s.Program },
		print: func(s *Service) []string { return []string{s.Argv0} },
	},
	optUmask: {
		key: "umask", classes: every,
		set: func(_ *Resolver, s *Service, val string) (err error) { s.Umask, err = parseUmask(val); return err },
		print: func(s *Service) []string {
			if s.Umask == nil {
				return nil
			}
			return []string{formatUmask(*s.Umask)}
		},
	},
	optNice: {
		key: "nice", classes: every,
		set: func(_ *Resolver, s *Service, val string) (err error) { s.Nice, err = parseNice(val); return err },
		print: func(s *Service) []string {
			if s.Nice == nil {
				return nil
			}
			return []string{strconv.Itoa(*s.Nice)}
		},
	},
	optLimit: {
		key: "limit", classes: every, repeat: true,
		set:   func(_ *Resolver, s *Service, val string) error { return addLimit(s, val) },
		print: func(s *Service) []string { return formatLimits(s.Limits) },
	},
	optReady: {
		key: "ready", classes: every,
		set: func(r *Resolver, s *Service, val string) (err error) {
			s.Ready, err = parseReady(r, s.Class, val)
			return err
		},
		print: func(s *Service) []string { return []string{s.Ready.String()} },
	},
	optReadyTimeout: durationOption("ready_timeout", every, defaultReadyTimeout, true, func(s *Service) *time.Duration { return &s.ReadyTimeout }),
	optAfter: {
		key: "after", classes: every,
		set: func(_ *Resolver, s *Service, val string) (err error) {
			s.After, err = parseNames("after", val)
			return err
		},
		print: func(s *Service) []string { return formatNames(writtenAfter(s)) },
	},
	optNeeds: {
		key: "needs", classes: every,
		set: func(_ *Resolver, s *Service, val string) (err error) {
			s.Needs, err = parseNames("needs", val)
			return err
		},
		print: func(s *Service) []string { return formatNames(s.Needs) },
	},
	optRestart: {
		key: "restart", classes: daemons,
		set:   func(_ *Resolver, s *Service, val string) (err error) { s.Restart, err = parseRestart(val); return err },
		print: func(s *Service) []string { return []string{s.Restart.String()} },
	},
	optRetries:     countOption("retries", every, 0, 0, func(s *Service) *int { return &s.Retries }),
	optOnFailure:   actionOption("on_failure", func(s *Service) *Action { return &s.OnFailure }),
	optOnSuccess:   actionOption("on_success", func(s *Service) *Action { return &s.OnSuccess }),
	optStopTimeout: durationOption("stop_timeout", every, 0, true, func(s *Service) *time.Duration { return &s.StopTimeout }),
	optCheck: {
		key: "check", classes: daemons | listeners, // a stream's instances are its connections: nothing to check
		set: func(r *Resolver, s *Service, val string) (err error) { s.Check, err = parseCheck(r, val); return err },
		print: func(s *Service) []string {
			if s.Check.Kind == ProbeNone {
				return nil
			}
			return []string{s.Check.Text}
		},
	},
	optCheckEvery:   checkOption(durationOption("check_every", daemons|listeners, defaultCheckEvery, true, func(s *Service) *time.Duration { return &s.CheckEvery })),
	optCheckTimeout: checkOption(durationOption("check_timeout", daemons|listeners, defaultCheckTimeout, true, func(s *Service) *time.Duration { return &s.CheckTimeout })),
	optCheckFails:   checkOption(countOption("check_fails", daemons|listeners, 1, defaultCheckFails, func(s *Service) *int { return &s.CheckFails })),
	optWatchdog:     durationOption("watchdog", every, 0, true, func(s *Service) *time.Duration { return &s.Watchdog }),
	optQuiet:        durationOption("quiet", every, 0, true, func(s *Service) *time.Duration { return &s.Quiet }),
	optPerSource:    countOption("per_source", streams, 1, 0, func(s *Service) *int { return &s.PerSource }),
	optRate: {
		key: "rate", classes: streams,
		set: func(_ *Resolver, s *Service, val string) (err error) { s.Rate, err = parseRate(val); return err },
		print: func(s *Service) []string {
			if s.Rate.N == 0 {
				return nil
			}
			return []string{s.Rate.String()}
		},
	},
	optOnlyFrom: {
		key: "only_from", classes: streams,
		set: func(_ *Resolver, s *Service, val string) (err error) {
			s.OnlyFrom, err = parseOnlyFrom(val)
			return err
		},
		print: func(s *Service) []string { return formatPrefixes(s.OnlyFrom) },
	},
}

// checkEnvFile reads f as a start would, for Check: a file that does not
// exist is an error unless it is optional, and so is every problem in it.
func checkEnvFile(f EnvFile) []error {
	_, err := ReadEnvFile(f.Path)
	var list ErrorList
	switch {
	case err == nil, f.Optional && errors.Is(err, fs.ErrNotExist):
		return nil
	case errors.As(err, &list):
		errs := make([]error, len(list))
		for i, e := range list {
			errs[i] = fmt.Errorf("env_file %w", e)
		}
		return errs
	}
	return []error{err}
}

// durationOption returns the option key=DUR, stored in the field that
// field points to; def 0 means no default. positive says whether 0 is
// refused: such an option is not printed when it is 0, which means unset.
func durationOption(key string, classes classSet, def time.Duration, positive bool, field func(*Service) *time.Duration) option {
	o := option{
		key: key, classes: classes,
		set: func(_ *Resolver, s *Service, val string) (err error) {
			*field(s), err = parseDuration(key, val, positive)
			return err
		},
		print: func(s *Service) []string {
			if positive && *field(s) == 0 {
				return nil
			}
			return []string{formatDuration(*field(s))}
		},
	}
	if def != 0 {
		o.def = func(s *Service) { *field(s) = def }
	}
	return o
}

// countOption returns the option key=N, a whole number from lo to
// maxCount, stored in the field that field points to; def 0 means no
// default. A value below lo means unset, and is not printed.
func countOption(key string, classes classSet, lo, def int, field func(*Service) *int) option {
	o := option{
		key: key, classes: classes,
		set: func(_ *Resolver, s *Service, val string) (err error) {
			*field(s), err = parseCount(key, val, lo, maxCount)
			return err
		},
		print: func(s *Service) []string {
			if *field(s) < lo {
				return nil
			}
			return []string{strconv.Itoa(*field(s))}
		},
	}
	if def != 0 {
		o.def = func(s *Service) { *field(s) = def }
	}
	return o
}

// checkOption returns o, an option of check= (check_every...), with its
// default only for services with a check, and printed only for them.
func checkOption(o option) option {
	def, print := o.def, o.print
	o.def = func(s *Service) {
		if s.Check.Kind != ProbeNone {
			def(s)
		}
	}
	o.print = func(s *Service) []string {
		if s.Check.Kind == ProbeNone {
			return nil
		}
		return print(s)
	}
	return o
}

// actionOption returns the option key=none|shutdown of every class,
// stored in the field that field points to.
func actionOption(key string, field func(*Service) *Action) option {
	return option{
		key: key, classes: every,
		set: func(_ *Resolver, s *Service, val string) (err error) {
			*field(s), err = parseAction(key, val)
			return err
		},
		print: func(s *Service) []string { return []string{field(s).String()} },
	}
}

// pathOption returns the option key=PATH, an absolute path, stored in the
// field that field points to; def "" means no default.
func pathOption(key string, classes classSet, def string, field func(*Service) *string) option {
	o := option{
		key: key, classes: classes,
		set: func(_ *Resolver, s *Service, val string) error {
			if !filepath.IsAbs(val) {
				return fmt.Errorf("invalid %s %q: want an absolute path", key, val)
			}
			*field(s) = val
			return nil
		},
		print: func(s *Service) []string {
			if *field(s) == "" {
				return nil
			}
			return []string{*field(s)}
		},
	}
	if def != "" {
		o.def = func(s *Service) { *field(s) = def }
	}
	return o
}

// boolOption returns the option key=yes|no of every class, which may also
// be written as the bare word key (yes) or, when negated is not "", as the
// bare word negated (no).
func boolOption(key, negated string, def bool, field func(*Service) *bool) option {
	o := option{
		key: key, classes: every, bare: "yes", negated: negated,
		set: func(_ *Resolver, s *Service, val string) error {
			switch strings.ToLower(val) {
			case "yes", "true", "on", "1":
				*field(s) = true
			case "no", "false", "off", "0":
				*field(s) = false
			default:
				return fmt.Errorf("invalid %s %q: want yes or no", key, val)
			}
			return nil
		},
		print: func(s *Service) []string {
			if *field(s) {
				return []string{"yes"}
			}
			return []string{"no"}
		},
	}
	if def {
		o.def = func(s *Service) { *field(s) = true }
	}
	return o
}

// wordKind says what a word before the program is.
type wordKind int

const (
	programWord  wordKind = iota // neither key=value nor a flag: the program
	optionWord                   // a known option; id and val are set
	unknownWord                  // key=value with an unknown key
	negatedValue                 // a negated flag given a value (disabled=...)
)

// classify says what a word before the program is: for an option, which
// one and the value it gives.
func classify(text string) (kind wordKind, id optionID, val string) {
	key, val, hasValue := strings.Cut(text, "=")
	for i := range options {
		o := &options[i]
		switch {
		case key == o.key && hasValue:
			return optionWord, optionID(i), val
		case key == o.key && o.bare != "":
			return optionWord, optionID(i), o.bare
		case key == o.negated && o.negated != "" && hasValue:
			return negatedValue, optionID(i), ""
		case key == o.negated && o.negated != "":
			return optionWord, optionID(i), "no"
		}
	}
	if hasValue {
		return unknownWord, 0, ""
	}
	return programWord, 0, ""
}

// optionKeys returns every word an option can start with, for suggestions.
func optionKeys() []string {
	keys := make([]string, 0, numOptions+1)
	for _, o := range options {
		keys = append(keys, o.key)
		if o.negated != "" {
			keys = append(keys, o.negated)
		}
	}
	return keys
}
