package netctl

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// timeLayout is how metac shows times, in the local time zone.
const timeLayout = "2006-01-02 15:04:05"

// hostJSON is one line of metac --json (SPEC §5).
type hostJSON struct {
	Host     string     `json:"host"`
	Name     string     `json:"name,omitempty"` // the host's own name for itself
	OK       bool       `json:"ok"`
	Error    string     `json:"error"`
	Version  string     `json:"version,omitempty"`
	Services *[]Service `json:"services,omitempty"` // list only
}

// printer writes metac's results.
type printer struct {
	prog   string
	cmd    string
	json   bool
	multi  bool // more than one host may answer: name each
	stdout io.Writer
	stderr io.Writer
}

// print writes every result and returns metac's exit status.
func (p *printer) print(results []result) int {
	status := exitOK
	headers := p.multi || len(results) > 1
	for i, r := range results {
		switch {
		case r.reply == nil:
			status = max(status, exitNoAnswer)
		case !r.reply.OK:
			status = max(status, exitFailed)
		}
		if p.json {
			p.printJSON(r)
			continue
		}
		if r.reply == nil || !r.reply.OK {
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
			writeTable(p.stdout, r.reply.Services)
		case "version":
			fmt.Fprintf(p.stdout, "%smetad %s\n", p.prefix(r.host, headers), r.reply.Metad)
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
func hostTitle(r result) string {
	if r.reply != nil && r.reply.Name != "" && r.reply.Name != r.host {
		return r.host + " (" + r.reply.Name + ")"
	}
	return r.host
}

// printError writes why a host failed, one line per line of the error,
// each naming the host.
func (p *printer) printError(r result) {
	msg := r.err
	if r.reply != nil {
		msg = r.reply.Error
	}
	host := r.host + ": "
	if r.host == localHostName {
		host = ""
	}
	for _, line := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
		fmt.Fprintf(p.stderr, "%s: %s%s\n", p.prog, host, line)
	}
}

func (p *printer) printJSON(r result) {
	j := hostJSON{Host: r.host, Error: r.err}
	if r.reply != nil {
		j.Name, j.OK, j.Error, j.Version = r.reply.Name, r.reply.OK, r.reply.Error, r.reply.Metad
		if p.cmd == "list" && r.reply.OK {
			svcs := r.reply.Services
			if svcs == nil {
				svcs = []Service{}
			}
			for i := range svcs {
				if svcs[i].Instances == nil {
					svcs[i].Instances = []Instance{}
				}
			}
			j.Services = &svcs
		}
	}
	b, _ := json.Marshal(j)
	fmt.Fprintf(p.stdout, "%s\n", b)
}

// writeTable writes services as an aligned table, one line per instance.
func writeTable(w io.Writer, svcs []Service) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCLASS\tENABLED\tSTATE\tPORT\tRESTARTS\tNEXT\tPID\tSTARTED")
	for _, s := range svcs {
		enabled, port, next := "no", "-", "-"
		if s.Enabled {
			enabled = "yes"
		}
		if s.Port != 0 {
			port = strconv.Itoa(s.Port)
		}
		if s.NextStart != nil {
			next = showTime(*s.NextStart)
		}
		pid, started := "-", "-"
		if len(s.Instances) > 0 {
			pid, started = strconv.Itoa(s.Instances[0].PID), showTime(s.Instances[0].Started)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.Name, s.Class, enabled, s.State, port, s.Restarts, next, pid, started)
		for _, in := range s.Instances[min(1, len(s.Instances)):] {
			fmt.Fprintf(tw, "\t\t\t\t\t\t\t%d\t%s\n", in.PID, showTime(in.Started))
		}
	}
	tw.Flush()
}

func showTime(t time.Time) string { return t.Local().Format(timeLayout) }
