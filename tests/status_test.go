package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStatusSaysWhy: metac status shows, beside the state and its reason,
// how the last instance ended, the last start that failed and the last
// lines a watch_output service wrote; --json carries them, and list
// leaves the output out.
func TestStatusSaysWhy(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "prog")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\necho hello from status\necho on stderr >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := startMetad(t, runOpts{conf: "talky daemon watch_output backoff=2s " + prog + "\n", args: []string{"-k", "/nonexistent"}})
	m.waitEvent(2, "two runs", msg("exited", "talky"))
	// The program cannot be executed any more: the next start fails.
	if err := os.Chmod(prog, 0o644); err != nil {
		t.Fatal(err)
	}
	m.waitEvent(1, "a start that fails", msg("cannot start", "talky"))

	out, errOut, status := ctlOf(m).run("status", "talky")
	if status != 0 {
		t.Fatalf("metac status: got status %d, %q %q", status, out, errOut)
	}
	for _, want := range []string{"talky  backoff", "last exit: exit status 3", "(crashed)", "last start error: ", "permission denied",
		"restarts 2", "output:", "    hello from status", "    on stderr"} {
		if !strings.Contains(out, want) {
			t.Errorf("metac status: got\n%s\nwant it to contain %q", out, want)
		}
	}

	out, _, _ = ctlOf(m).run("--json", "status", "talky")
	var host struct {
		Services []struct {
			Since      string   `json:"since"`
			StartError string   `json:"last_start_error"`
			Output     []string `json:"output"`
			LastExit   struct {
				Code int `json:"code"`
			} `json:"last_exit"`
		} `json:"services"`
	}
	if err := json.Unmarshal([]byte(out), &host); err != nil || len(host.Services) != 1 {
		t.Fatalf("metac --json status: %v in %q", err, out)
	}
	s := host.Services[0]
	if s.Since == "" || !strings.Contains(s.StartError, "permission denied") || s.LastExit.Code != 3 || len(s.Output) < 4 {
		t.Errorf("metac --json status: got %+v, want since, the start error, exit code 3 and the output of two runs", s)
	}
	if out, _, _ := ctlOf(m).run("--json", "list", "talky"); strings.Contains(out, `"output"`) || !strings.Contains(out, `"since"`) {
		t.Errorf("metac --json list: got %s, want since and no output", out)
	}
}
