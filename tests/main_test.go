// Package tests runs the real metad binary as a black box: real
// processes, real sockets, and metad as PID 1 of a new PID namespace.
//
// TestMain builds the static binary once. The test binary doubles as the
// helper programs the tests need (see helpers_test.go): run with
// METAD_TEST_HELPER=name it does that job instead of running tests.
package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

var (
	metadBin string // the binary under test
	metacBin string // the metac symlink to it
	selfBin  string // this test binary, for helper programs
)

func TestMain(m *testing.M) {
	if name := os.Getenv("METAD_TEST_HELPER"); name != "" {
		os.Exit(runHelper(name, os.Args[1:]))
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "metad-tests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	metadBin = filepath.Join(dir, "metad")
	metacBin = filepath.Join(dir, "metac")
	ldflags := "-X main.version=test-build"
	if runtime.GOARCH == "amd64" { // as the Makefile builds it: see init/entry_linux_amd64.s
		ldflags += " -E=metad/init.startEntry"
	}
	build := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", metadBin, "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "cannot build metad:", err)
		return 1
	}
	if err := os.Symlink("metad", metacBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if selfBin, err = os.Executable(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
