package metrics

import (
	"bufio"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"metad/conffmt"
	"metad/supervise"
)

// States are the states a service can be in, as supervise names them
// (see metad(8)); metad_service_state has one series for each. A state
// supervise reports that is not in the list gets a series all the same.
var States = supervise.States()

// Snapshot is what one scrape shows: the services and metad's own figures.
type Snapshot struct {
	Services  []supervise.Status
	Version   string  // metad's
	GoVersion string  // of the Go that built metad
	Process   Process // metad's process
}

// Process is what metad's process uses. A figure that could not be read
// is negative (a zero StartTime), and its family is left out.
type Process struct {
	Goroutines int
	StartTime  time.Time // when the process started (a re-exec keeps the process)
	CPUSeconds float64   // user and system time
	RSSBytes   int64     // resident memory
	OpenFDs    int
	MaxFDs     int // the soft limit of open descriptors
}

// family is one metric family: its samples share the name, HELP and TYPE.
type family struct {
	name, help, typ string
	samples         []sample
}

type sample struct {
	labels []string // name, value, name, value...
	value  float64
}

func (f *family) add(value float64, labels ...string) {
	f.samples = append(f.samples, sample{labels: labels, value: value})
}

// Write writes snap in the Prometheus text exposition format 0.0.4: HELP
// and TYPE for every family, families in a fixed order, services sorted
// by name within a family. It does not change snap.
func Write(w io.Writer, snap *Snapshot) error {
	bw := bufio.NewWriter(w)
	for _, f := range families(snap) {
		writeFamily(bw, &f)
	}
	return bw.Flush()
}

// families returns the families of snap, in the order they are written.
func families(snap *Snapshot) []family {
	svcs := slices.Clone(snap.Services)
	slices.SortStableFunc(svcs, func(a, b supervise.Status) int { return strings.Compare(a.Name, b.Name) })
	p := snap.Process

	build := family{name: "metad_build_info", typ: "gauge", help: "Always 1; the labels say which metad runs."}
	build.add(1, "version", snap.Version, "goversion", snap.GoVersion)
	services := family{name: "metad_services", typ: "gauge", help: "Services metad supervises (those that answered this scrape)."}
	services.add(float64(len(svcs)))
	out := []family{build, services}

	own := []struct {
		name, typ, help string
		value           float64
		ok              bool
	}{
		{"process_start_time_seconds", "gauge", "Start time of metad's process since the Unix epoch, in seconds.", float64(p.StartTime.UnixMilli()) / 1e3, !p.StartTime.IsZero()},
		{"process_cpu_seconds_total", "counter", "User and system CPU time metad's process has used, in seconds.", p.CPUSeconds, p.CPUSeconds >= 0},
		{"process_resident_memory_bytes", "gauge", "Resident memory of metad's process, in bytes.", float64(p.RSSBytes), p.RSSBytes >= 0},
		{"process_open_fds", "gauge", "Open file descriptors of metad's process.", float64(p.OpenFDs), p.OpenFDs >= 0},
		{"process_max_fds", "gauge", "Limit of open file descriptors of metad's process.", float64(p.MaxFDs), p.MaxFDs >= 0},
		{"go_goroutines", "gauge", "Goroutines in metad.", float64(p.Goroutines), p.Goroutines >= 0},
	}
	for _, o := range own {
		if o.ok {
			f := family{name: o.name, typ: o.typ, help: o.help}
			f.add(o.value)
			out = append(out, f)
		}
	}

	info := family{name: "metad_service_info", typ: "gauge", help: "Always 1; the labels say the service's class."}
	state := family{name: "metad_service_state", typ: "gauge", help: "1 for the state the service is in, 0 for the others."}
	enabled := family{name: "metad_service_enabled", typ: "gauge", help: "1 if the class rules may start instances of the service, else 0."}
	instances := family{name: "metad_service_instances", typ: "gauge", help: "Running instances of the service."}
	custody := family{name: "metad_service_custody_processes", typ: "gauge", help: "Processes left by ended instances that metad is stopping."}
	held := family{name: "metad_service_held_slots", typ: "gauge", help: "Stream services: connection slots held by crashes (0 for other classes)."}
	restarts := family{name: "metad_service_restarts_total", typ: "counter", help: "Instances that ended without being asked to (stream: those that failed)."}
	crashes := family{name: "metad_service_crashes", typ: "gauge", help: "Crashes in a row counting toward the service's backoff."}
	starts := family{name: "metad_service_starts_total", typ: "counter", help: "Instances of the service started, by any rule or request."}
	exits := family{name: "metad_service_exits_total", typ: "counter", help: "Instances of the service that ended, for any reason."}
	lastExit := family{name: "metad_service_last_exit_status", typ: "gauge", help: "How the service's last instance ended, as a shell reports it (128+N for signal N); only once one has ended."}
	next := family{name: "metad_service_next_start_timestamp_seconds", typ: "gauge", help: "When the next automatic start is due, since the Unix epoch, in seconds; only while one is scheduled."}
	ready := family{name: "metad_service_ready", typ: "gauge", help: "1 if the service is ready (a daemon's instance is ready, a listener or stream listens), else 0."}
	healthy := family{name: "metad_service_healthy", typ: "gauge", help: "1 if the service's check passes, 0 if it fails; only for a service with a check that has run."}
	unhealthy := family{name: "metad_service_unhealthy_total", typ: "counter", help: "Instances stopped as unhealthy, hung or watchdog-expired."}
	refused := family{name: "metad_service_refused_total", typ: "counter", help: "Stream services: connections admission closed without starting anything, by rule."}
	for _, s := range svcs {
		info.add(1, "service", s.Name, "class", s.Class.String())
		for _, st := range States {
			state.add(bool01(s.State == st), "service", s.Name, "state", st)
		}
		if !slices.Contains(States, s.State) {
			state.add(1, "service", s.Name, "state", s.State)
		}
		enabled.add(bool01(s.Enabled), "service", s.Name)
		instances.add(float64(len(s.Instances)), "service", s.Name)
		custody.add(float64(len(s.Custody)), "service", s.Name)
		held.add(float64(s.Held), "service", s.Name)
		restarts.add(float64(s.Restarts), "service", s.Name)
		crashes.add(float64(s.Crashes), "service", s.Name)
		starts.add(float64(s.Starts), "service", s.Name)
		exits.add(float64(s.Exits), "service", s.Name)
		if s.LastExit != nil {
			lastExit.add(float64(s.LastExit.Code), "service", s.Name)
		}
		if !s.NextStart.IsZero() {
			next.add(float64(s.NextStart.UnixMilli())/1e3, "service", s.Name, "reason", s.NextReason)
		}
		ready.add(bool01(s.Ready), "service", s.Name)
		if s.Health == "healthy" || s.Health == "unhealthy" {
			healthy.add(bool01(s.Health == "healthy"), "service", s.Name)
		}
		unhealthy.add(float64(s.Unhealthy), "service", s.Name)
		if s.Class == conffmt.Stream {
			refused.add(float64(s.Refused.PerSource), "service", s.Name, "rule", "per_source")
			refused.add(float64(s.Refused.Rate), "service", s.Name, "rule", "rate")
			refused.add(float64(s.Refused.OnlyFrom), "service", s.Name, "rule", "only_from")
		}
	}
	return append(out, info, state, enabled, instances, custody, held, restarts, crashes, starts, exits, lastExit, next, ready, healthy, unhealthy, refused)
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// writeFamily writes f's HELP and TYPE lines and its samples. A family
// without samples is left out.
func writeFamily(w *bufio.Writer, f *family) {
	if len(f.samples) == 0 {
		return
	}
	w.WriteString("# HELP " + f.name + " " + helpEscaper.Replace(f.help) + "\n")
	w.WriteString("# TYPE " + f.name + " " + f.typ + "\n")
	for _, s := range f.samples {
		w.WriteString(f.name)
		if len(s.labels) > 0 {
			w.WriteByte('{')
			for i := 0; i+1 < len(s.labels); i += 2 {
				if i > 0 {
					w.WriteByte(',')
				}
				w.WriteString(s.labels[i] + `="` + labelEscaper.Replace(s.labels[i+1]) + `"`)
			}
			w.WriteByte('}')
		}
		w.WriteString(" " + formatValue(s.value) + "\n")
	}
}

// The escapes of the text format: a label value escapes backslash, double
// quote and line feed; a HELP text backslash and line feed.
var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

// formatValue writes v as the text format spells a float: in decimal,
// NaN, +Inf or -Inf.
func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}
