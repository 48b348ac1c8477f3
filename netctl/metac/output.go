package metac

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"metad/netctl"
)

// timeLayout is how metac shows times, in the local time zone.
const timeLayout = "2006-01-02 15:04:05"

// hostJSON is one line of metac --json (SPEC §5). An error that concerns
// no host (a usage error, a missing key file) has host "".
type hostJSON struct {
	Host     string            `json:"host"`
	Name     string            `json:"name,omitempty"` // the host's own name for itself
	OK       bool              `json:"ok"`
	Error    string            `json:"error"`
	Version  string            `json:"version,omitempty"`
	Services *[]netctl.Service `json:"services,omitempty"` // list only
	Stacks   string            `json:"stacks,omitempty"`   // debug stacks only
	Outcomes []outcomeJSON     `json:"outcomes,omitempty"` // start, stop, restart, wait: each service's outcome
}

// printer writes metac's results.
type printer struct {
	prog   string
	cmd    string
	json   bool
	multi  bool // more than one host may answer: name each
	stdout io.Writer
	stderr io.Writer
	// now is the time that relative times (NEXT, "5s ago") count from;
	// zero means the time of printing.
	now time.Time
}

// clock returns the time relative times count from.
func (p *printer) clock() time.Time {
	if p.now.IsZero() {
		return time.Now()
	}
	return p.now
}

// usage reports a usage error and returns the usage status: one line on
// stderr that points to the help, and with --json a line of JSON too.
func (p *printer) usage(err error) int {
	fmt.Fprintf(p.stderr, "%s: %v (see %s --help)\n", p.prog, err, p.prog)
	if p.json {
		p.writeJSON(hostJSON{Error: err.Error()})
	}
	return exitUsage
}

// fail reports a local error that kept every host (or host, when it is
// known) from answering, and returns the usage status: a line on stderr,
// and with --json a line of JSON too.
func (p *printer) fail(host, msg string) int {
	fmt.Fprintf(p.stderr, "%s: %s\n", p.prog, msg)
	if p.json {
		p.writeJSON(hostJSON{Host: host, Error: msg})
	}
	return exitUsage
}

// print writes every answer and returns metac's exit status.
func (p *printer) print(answers []netctl.Answer) int {
	status := exitOK
	headers := p.multi || len(answers) > 1
	for i, r := range answers {
		switch {
		case r.Reply == nil:
			status = max(status, exitNoAnswer)
		case !r.Reply.OK:
			status = max(status, exitFailed)
		}
		if p.json {
			p.printJSON(r)
			continue
		}
		if r.Reply == nil || !r.Reply.OK {
			p.printError(r)
			continue
		}
		switch p.cmd {
		case "list":
			if headers {
				if i > 0 {
					fmt.Fprintln(p.stdout)
				}
				fmt.Fprintf(p.stdout, "==> %s <==\n", hostTitle(r))
			}
			writeTable(p.stdout, r.Reply.Services, p.clock())
		case "status":
			if headers {
				if i > 0 {
					fmt.Fprintln(p.stdout)
				}
				fmt.Fprintf(p.stdout, "==> %s <==\n", hostTitle(r))
			}
			writeStatus(p.stdout, r.Reply.Services, p.clock())
		case "debug":
			io.WriteString(p.stdout, r.Reply.Stacks)
		case "version":
			fmt.Fprintf(p.stdout, "%smetad %s\n", p.prefix(r.Host, headers), r.Reply.Metad)
		default:
			if headers {
				fmt.Fprintf(p.stdout, "%s: ok\n", hostTitle(r))
			}
		}
	}
	return status
}

// prefix returns "HOST: " when hosts are named.
func (p *printer) prefix(host string, named bool) string {
	if !named {
		return ""
	}
	return host + ": "
}

// hostTitle names a host, and its own name for itself when that differs.
func hostTitle(r netctl.Answer) string {
	if r.Reply != nil && r.Reply.Name != "" && r.Reply.Name != r.Host {
		return r.Host + " (" + r.Reply.Name + ")"
	}
	return r.Host
}

// printError writes why a host failed, one line per line of the error,
// each naming the host.
func (p *printer) printError(r netctl.Answer) {
	msg := r.Err
	if r.Reply != nil {
		msg = r.Reply.Error
	}
	host := r.Host + ": "
	if r.Host == localHost {
		host = ""
	}
	for _, line := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
		fmt.Fprintf(p.stderr, "%s: %s%s\n", p.prog, host, line)
	}
}

// printJSON writes a host's answer as one line of JSON.
func (p *printer) printJSON(r netctl.Answer) {
	j := hostJSON{Host: r.Host, Error: r.Err}
	if r.Reply != nil {
		j.Name, j.OK, j.Error, j.Version, j.Stacks = r.Reply.Name, r.Reply.OK, r.Reply.Error, r.Reply.Metad, r.Reply.Stacks
		if (p.cmd == "list" || p.cmd == "status") && r.Reply.OK {
			svcs := r.Reply.Services
			if svcs == nil {
				svcs = []netctl.Service{}
			}
			for i := range svcs {
				if svcs[i].Instances == nil {
					svcs[i].Instances = []netctl.Instance{}
				}
			}
			j.Services = &svcs
		}
	}
	p.writeJSON(j)
}

func (p *printer) writeJSON(j hostJSON) {
	b, _ := json.Marshal(j)
	fmt.Fprintf(p.stdout, "%s\n", b)
}

// writeTable writes services as an aligned table, one line per instance,
// with the next start relative to now.
func writeTable(w io.Writer, svcs []netctl.Service, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCLASS\tENABLED\tSTATE\tREADY\tPORT\tRESTARTS\tLAST EXIT\tNEXT\tPID\tSTARTED")
	for _, s := range svcs {
		port, next := "-", "-"
		if s.Port != 0 {
			port = strconv.Itoa(s.Port)
		}
		if s.NextStart != nil {
			next = "in " + s.NextStart.Sub(now).Round(time.Second).String()
		}
		pid, started := "-", "-"
		if len(s.Instances) > 0 {
			pid, started = strconv.Itoa(s.Instances[0].PID), showTime(s.Instances[0].Started)
		}
		state := s.State
		if len(s.Custody) > 0 { // processes left by ended instances, being stopped
			state += "(+" + strconv.Itoa(len(s.Custody)) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", s.Name, s.Class, yesNo(s.Enabled), state, yesNo(ready(s)),
			port, s.Restarts, shortExit(s.LastExit), next, pid, started)
		for _, in := range s.Instances[min(1, len(s.Instances)):] {
			fmt.Fprintf(tw, "\t\t\t\t\t\t\t\t\t%d\t%s\n", in.PID, showTime(in.Started))
		}
	}
	tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// shortExit says how an instance ended in a few characters: "exit 3",
// "signal 9"; "-" for none.
func shortExit(e *netctl.LastExit) string {
	if e == nil {
		return "-"
	}
	if sig, ok := strings.CutPrefix(e.Status, "signal "); ok {
		n, _, _ := strings.Cut(sig, " ")
		return "signal " + n
	}
	return "exit " + strconv.Itoa(e.Code)
}

// writeStatus writes each service as a block: its state with the reason
// and for how long, then one line per detail it has.
func writeStatus(w io.Writer, svcs []netctl.Service, now time.Time) {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	for i, s := range svcs {
		if i > 0 {
			fmt.Fprintln(bw)
		}
		head := s.Name + "  " + stateText(s)
		if s.Since != nil {
			head += " for " + since(now, *s.Since)
		}
		fmt.Fprintln(bw, head)
		enabled, readiness := "enabled", "not ready"
		if !s.Enabled {
			enabled = "disabled"
		}
		if ready(s) {
			readiness = "ready"
		}
		line := "  " + s.Class + ", " + enabled + ", " + readiness
		if s.Port != 0 {
			line += ", port " + strconv.Itoa(s.Port)
		}
		fmt.Fprintln(bw, line)
		for _, in := range s.Instances {
			fmt.Fprintf(bw, "  pid %d, started %s (%s ago)\n", in.PID, showTime(in.Started), since(now, in.Started))
		}
		if len(s.Custody) > 0 {
			pids := make([]string, len(s.Custody))
			for i, p := range s.Custody {
				pids[i] = strconv.Itoa(p)
			}
			fmt.Fprintf(bw, "  custody: %s (left by ended instances, being stopped)\n", strings.Join(pids, " "))
		}
		if s.NotifyStatus != "" {
			fmt.Fprintf(bw, "  notify status: %s\n", s.NotifyStatus)
		}
		if s.Health != "" {
			fmt.Fprintf(bw, "  health: %s\n", healthText(s))
		}
		if e := s.LastExit; e != nil {
			fmt.Fprintf(bw, "  last exit: %s at %s, after %s (%s)\n", e.Status, showTime(e.At), seconds(e.Ran).Round(time.Millisecond), e.Outcome)
		}
		if l := s.LastStop; l != nil {
			fmt.Fprintf(bw, "  last stop: %s at %s\n", stopText(l), showTime(l.At))
		}
		if s.StartError != "" {
			at := ""
			if s.StartErrorAt != nil {
				at = " at " + showTime(*s.StartErrorAt)
			}
			fmt.Fprintf(bw, "  last start error: %s%s\n", s.StartError, at)
		}
		if s.NextStart != nil {
			fmt.Fprintf(bw, "  next start: %s, in %s (%s)\n", showTime(*s.NextStart), s.NextStart.Sub(now).Round(time.Second), s.Next)
		}
		if s.ReadyTimeout > 0 || s.StopTimeout > 0 {
			fmt.Fprintf(bw, "  timeouts: ready %s, stop %s\n", seconds(s.ReadyTimeout), seconds(s.StopTimeout))
		}
		if r := s.Refused; r != nil && *r != (netctl.Refused{}) {
			fmt.Fprintf(bw, "  refused: per_source %d, rate %d, only_from %d\n", r.PerSource, r.Rate, r.OnlyFrom)
		}
		fmt.Fprintf(bw, "  restarts %d, crashes in a row %d", s.Restarts, s.Crashes)
		if s.Unhealthy > 0 {
			fmt.Fprintf(bw, ", unhealthy %d", s.Unhealthy)
		}
		fmt.Fprintf(bw, ", started %d, ended %d", s.Starts, s.Exits)
		if s.Held > 0 {
			fmt.Fprintf(bw, ", slots held by crashes %d", s.Held)
		}
		fmt.Fprintln(bw)
		if len(s.Output) > 0 {
			fmt.Fprintln(bw, "  output:")
			for _, l := range s.Output {
				fmt.Fprintln(bw, "    "+l)
			}
		}
	}
}

// healthText says how a service's check stands: "healthy", "unhealthy:
// 3 failed checks in a row, last: connection refused".
func healthText(s netctl.Service) string {
	text := s.Health
	switch {
	case s.CheckFails > 0:
		text += fmt.Sprintf(": %d failed %s in a row", s.CheckFails, plural(s.CheckFails, "check", "checks"))
		if s.HealthError != "" {
			text += ", last: " + s.HealthError
		}
	case s.HealthError != "":
		text += " (last failure: " + s.HealthError + ")"
	}
	return text
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// stopText says how a stop ended: "stopped in 120ms", "killed after 10s".
func stopText(l *netctl.LastStop) string {
	if l.Killed {
		return "killed after " + tookText(seconds(l.Took))
	}
	return "stopped in " + tookText(seconds(l.Took))
}

// tookText shows how long a stop took, cut (not rounded) to what reads
// well: a stop killed after a 2s timeout took a little more than 2s, and
// says "2s".
func tookText(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Truncate(time.Millisecond).String()
	case d < time.Minute:
		return d.Truncate(100 * time.Millisecond).String()
	}
	return d.Truncate(time.Second).String()
}

// seconds converts seconds as the wire carries them to a duration.
func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// since says how long ago t was, to the second (to the millisecond
// below one second).
func since(now, t time.Time) string {
	d := now.Sub(t)
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func showTime(t time.Time) string { return t.Local().Format(timeLayout) }

// summaryCommands are the commands --summary summarizes.
var summaryCommands = []string{"list", "status"}

// serviceSummary is one line of --summary: a service across the hosts
// that answered.
type serviceSummary struct {
	Service  string      `json:"service"`
	Hosts    int         `json:"hosts"` // that have it
	Ready    int         `json:"ready"`
	Starting int         `json:"starting"`
	Backoff  int         `json:"backoff"`
	Failed   int         `json:"failed"`
	Other    int         `json:"other"` // disabled, stopping...
	NotReady []hostState `json:"not_ready"`
}

// hostState names a host and the state a service is in there.
type hostState struct {
	Host  string `json:"host"`
	State string `json:"state"`
}

// summarize counts each service's states across the answers that are
// ok, in the order the services first appear.
func summarize(answers []netctl.Answer) []*serviceSummary {
	var out []*serviceSummary
	by := map[string]*serviceSummary{}
	for _, a := range answers {
		if a.Reply == nil || !a.Reply.OK {
			continue
		}
		for _, s := range a.Reply.Services {
			sum := by[s.Name]
			if sum == nil {
				sum = &serviceSummary{Service: s.Name, NotReady: []hostState{}}
				by[s.Name] = sum
				out = append(out, sum)
			}
			sum.Hosts++
			switch {
			case ready(s):
				sum.Ready++
				continue
			case s.State == "starting":
				sum.Starting++
			case s.State == "backoff":
				sum.Backoff++
			case s.State == "failed":
				sum.Failed++
			default:
				sum.Other++
			}
			sum.NotReady = append(sum.NotReady, hostState{a.Host, s.State})
		}
	}
	return out
}

// printSummary writes one line per service across the answers (the
// hosts that did not answer are reported as errors) and returns metac's
// exit status.
func (p *printer) printSummary(answers []netctl.Answer) int {
	status := exitOK
	for _, r := range answers {
		switch {
		case r.Reply == nil:
			status = max(status, exitNoAnswer)
		case !r.Reply.OK:
			status = max(status, exitFailed)
		default:
			continue
		}
		if p.json {
			p.printJSON(r)
		} else {
			p.printError(r)
		}
	}
	sums := summarize(answers)
	if p.json {
		for _, s := range sums {
			b, _ := json.Marshal(s)
			fmt.Fprintf(p.stdout, "%s\n", b)
		}
		return status
	}
	tw := tabwriter.NewWriter(p.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tHOSTS\tREADY\tSTARTING\tBACKOFF\tFAILED\tOTHER\tNOT READY")
	for _, s := range sums {
		var not []string
		for _, h := range s.NotReady {
			not = append(not, h.Host+" ("+h.State+")")
		}
		list := "-"
		if len(not) > 0 {
			list = strings.Join(not, ", ")
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", s.Service, s.Hosts, s.Ready, s.Starting, s.Backoff, s.Failed, s.Other, list)
	}
	tw.Flush()
	return status
}
