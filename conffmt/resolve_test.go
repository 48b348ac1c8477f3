package conffmt

import (
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
)

// These tests use the host's user database, PATH and /etc/services; they
// rely only on what every Linux system has (root, /bin/sh), and skip what
// it may not.

func TestResolveUser(t *testing.T) {
	tests := []struct {
		spec string
		want *Credential
	}{
		{"root", &Credential{User: "root", UID: 0, GID: 0, Groups: []uint32{0}}},
		{"0", &Credential{User: "0", UID: 0, GID: 0, Groups: []uint32{0}}},
		{"root:0", &Credential{User: "root", Group: "0", UID: 0, GID: 0}},
		{"root:root", &Credential{User: "root", Group: "root", UID: 0, GID: 0}},
		{"0:7", &Credential{User: "0", Group: "7", UID: 0, GID: 7}},
		{"4000000000", &Credential{User: "4000000000", UID: 4000000000, GID: 4000000000}},
		{"4000000000:12", &Credential{User: "4000000000", Group: "12", UID: 4000000000, GID: 12}},
	}
	for _, tt := range tests {
		got, err := ResolveUser(tt.spec)
		if err != nil {
			t.Errorf("ResolveUser(%q): got error %v, want none", tt.spec, err)
			continue
		}
		if tt.want.Groups != nil && len(got.Groups) > 0 {
			// root may have more groups than its own on some hosts
			got.Groups = got.Groups[:1]
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ResolveUser(%q): got %+v, want %+v", tt.spec, got, tt.want)
		}
	}
}

func TestResolveUserErrors(t *testing.T) {
	tests := []struct{ spec, want string }{
		{"", `invalid user "": want USER or USER:GROUP`},
		{":root", `invalid user ":root": want USER or USER:GROUP`},
		{"root:", `invalid user "root:": want USER or USER:GROUP`},
		{"no-such-user-metad", `unknown user "no-such-user-metad"`},
		{"root:no-such-group-metad", `unknown group "no-such-group-metad"`},
		{"4294967295", `unknown user "4294967295"`},
		{"-1", `unknown user "-1"`},
	}
	for _, tt := range tests {
		_, err := ResolveUser(tt.spec)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ResolveUser(%q): got %v, want %s", tt.spec, err, tt.want)
		}
	}
}

func TestResolveNamedUserGroups(t *testing.T) {
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no user nobody on this host (every Debian has one): %v", err)
	}
	got, err := ResolveUser("nobody")
	if err != nil {
		t.Fatal(err)
	}
	if got.User != "nobody" || u.Uid != itoa(got.UID) || u.Gid != itoa(got.GID) || len(got.Groups) == 0 || got.Groups[0] != got.GID {
		t.Errorf("got %+v, want nobody's ids %s:%s with its primary group first", got, u.Uid, u.Gid)
	}
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func TestLookPath(t *testing.T) {
	if p, err := lookPath("/bin/sh"); err != nil || p != "/bin/sh" {
		t.Errorf("lookPath(/bin/sh): got %q, %v, want /bin/sh", p, err)
	}
	if p, err := lookPath("sh"); err != nil || !filepath.IsAbs(p) {
		t.Errorf("lookPath(sh): got %q, %v, want an absolute path", p, err)
	}

	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ program, want string }{
		{"no-such-program-metad", `program "no-such-program-metad" not found in PATH`},
		{dir + "/missing", `program "` + dir + `/missing" not found`},
		{dir, `program "` + dir + `" is not a regular file`},
		{plain, `program "` + plain + `" is not executable`},
	}
	for _, tt := range tests {
		_, err := lookPath(tt.program)
		if err == nil || err.Error() != tt.want {
			t.Errorf("lookPath(%q): got %v, want %s", tt.program, err, tt.want)
		}
	}
}

func TestLookupPort(t *testing.T) {
	if _, err := os.Stat("/etc/services"); err != nil {
		t.Fatalf("no /etc/services on this host (Debian's netbase has it): %v", err)
	}
	if p, err := lookupPort("http"); err != nil || p != 80 {
		t.Errorf("lookupPort(http): got %d, %v, want 80", p, err)
	}
	_, err := lookupPort("no-such-service-metad")
	if want := `unknown port "no-such-service-metad": not a number or a TCP service in /etc/services`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestParseSystemResolver(t *testing.T) {
	svcs, err := Parse("t.conf", []byte("web daemon user=0 sh -c true\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := svcs[0]; !filepath.IsAbs(s.Path) || s.Program != "sh" || s.User == nil || s.User.UID != 0 {
		t.Errorf("got %+v, want sh found in PATH and user 0", s)
	}
	_, err = Parse("t.conf", []byte("web daemon user=no-such-user-metad sh\n"), &Resolver{})
	if want := `t.conf:1:12: unknown user "no-such-user-metad"`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}
