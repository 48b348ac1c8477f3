package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"metad/init"
	"metad/supervise"
)

// The check protocol between images. Before it executes a binary in its
// place, a metad runs it once with METAD_REEXEC_CHECK set; the binary
// prints an answer on its standard output and exits 0:
//
//	metad-state 1                (1) the oldest envelope version it reads
//	takes network                (2) it takes the network control socket
//	reads metad-state 1 2        (3) every envelope version it reads
//	reads services 1 2           (4) every version of service records it reads
//
// Lines 1 and 2 are all that metad binaries up to envelope version 1 print
// and read: such a binary checks that line 1 is "metad-state 1" and hands
// over a version-1 envelope. Lines 3 and 4 let images negotiate: the
// sender writes the newest envelope version both read (see Answer.choose);
// a binary without them reads exactly the version of its line 1, with
// service records of that version. Readers ignore lines they do not know,
// so later versions may add lines after these.
const (
	envCheck    = "METAD_REEXEC_CHECK"
	answerTakes = "takes network"
)

// checkTimeout bounds the check run of a new binary.
const checkTimeout = 5 * time.Second

// Answer is what a binary answered to the check.
type Answer struct {
	States       []int // envelope versions it reads
	Services     []int // versions of service records it reads
	TakesNetwork bool  // it takes the network control socket (always, from envelope version 2)
}

// AnswerCheck writes this binary's answer to the check: call it when
// Checking reports true, then exit 0.
func AnswerCheck(w io.Writer) error {
	_, err := io.WriteString(w, answer())
	return err
}

// Checking reports whether metad was started to answer the check.
func Checking() bool { return os.Getenv(envCheck) != "" }

func answer() string {
	return fmt.Sprintf("%s %d\n%s\nreads %s %s\nreads services %s\n",
		Format, statesRead[0], answerTakes, Format, joinInts(statesRead), joinInts(servicesRead()))
}

// servicesRead is the versions of service records this binary reads:
// supervise's own and version 1, which today's binaries write.
func servicesRead() []int {
	v := []int{1, supervise.StateVersion}
	slices.Sort(v)
	return slices.Compact(v)
}

// parseAnswer reads the answer of a binary to the check.
func parseAnswer(text string) (Answer, error) {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	first := strings.TrimSpace(lines[0])
	var a Answer
	word, n, _ := strings.Cut(first, " ")
	v, err := strconv.Atoi(n)
	if word != Format || err != nil || v < 1 {
		return Answer{}, fmt.Errorf("it answered %q, want %q", first, fmt.Sprintf("%s %d", Format, statesRead[0]))
	}
	for _, l := range lines[1:] {
		fields := strings.Fields(l)
		switch {
		case strings.TrimSpace(l) == answerTakes:
			a.TakesNetwork = true
		case len(fields) > 2 && fields[0] == "reads" && fields[1] == Format:
			a.States = atois(fields[2:])
		case len(fields) > 2 && fields[0] == "reads" && fields[1] == "services":
			a.Services = atois(fields[2:])
		}
	}
	if a.States == nil { // a binary of envelope version 1
		a.States = []int{v}
	}
	if a.Services == nil {
		a.Services = []int{v}
	}
	return a, nil
}

// choose returns the envelope version to write for a binary that answered
// a: the newest one both this binary writes and it reads, with service
// records it reads. Version 1 carries service records of version 1 only,
// so it is written only as long as supervise's are of version 1.
func (a Answer) choose() (int, error) {
	if slices.Contains(a.States, Version) && slices.Contains(a.Services, supervise.StateVersion) {
		return Version, nil
	}
	if slices.Contains(a.States, 1) && slices.Contains(a.Services, 1) && supervise.StateVersion == 1 {
		return 1, nil
	}
	return 0, fmt.Errorf("it reads %s versions %s with service records of versions %s; this metad writes version %d with service records of version %d",
		Format, joinInts(a.States), joinInts(a.Services), Version, supervise.StateVersion)
}

// runCheck runs the binary at path with METAD_REEXEC_CHECK, through procs
// (the only waiter for metad's children), and returns its answer.
func runCheck(procs Procs, path string) (Answer, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return Answer{}, err
	}
	defer r.Close()
	exited := make(chan initsys.Exit, 1)
	p := &initsys.Proc{
		Path:   path,
		Argv:   []string{path},
		Env:    append(os.Environ(), envCheck+"=1"),
		Files:  []int{-1, int(w.Fd()), 2},
		Setsid: true,
	}
	pid, err := procs.Spawn(p, func(e initsys.Exit) { exited <- e })
	w.Close()
	if err != nil {
		return Answer{}, err
	}
	r.SetReadDeadline(time.Now().Add(checkTimeout))
	text, _ := io.ReadAll(bufio.NewReader(io.LimitReader(r, 4096)))
	timer := time.NewTimer(checkTimeout)
	defer timer.Stop()
	select {
	case e := <-exited:
		if e.Code() != 0 {
			return Answer{}, fmt.Errorf("its check run ended with %s", e)
		}
	case <-timer.C:
		syscall.Kill(pid, syscall.SIGKILL)
		<-exited
		return Answer{}, errors.New("its check run did not end")
	}
	return parseAnswer(string(text))
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, " ")
}

// atois returns the numbers among words, skipping the rest.
func atois(words []string) []int {
	v := []int{}
	for _, w := range words {
		if n, err := strconv.Atoi(w); err == nil {
			v = append(v, n)
		}
	}
	return v
}
