package conffmt

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func TestParseEnvFile(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string
	}{
		{"empty", "", nil},
		{"plain", "A=1\nB=two words\n", []string{"A=1", "B=two words"}},
		{"no final newline", "A=1", []string{"A=1"}},
		{"comments and blanks", "# c\n; c\n\n  \t\n  # indented\nA=1 # not a comment\n", []string{"A=1 # not a comment"}},
		{"blanks around", "  A = 1 \t\n\tB=\t2\n", []string{"A=1", "B=2"}},
		{"empty value", "A=\nB=  \n", []string{"A=", "B="}},
		{"DOS line ends", "A=1\r\nB=\"x y\"\r\n", []string{"A=1", "B=x y"}},
		{"equals in value", "A=b=c\n", []string{"A=b=c"}},
		{"unquoted keeps all", `A=it's \"x\" $HOME \n`, []string{`A=it's \"x\" $HOME \n`}},
		{"single quotes", `A='x  "y" \z $w'`, []string{`A=x  "y" \z $w`}},
		{"double quotes", `A="a \"b\" \\ \$c \` + "`" + ` \n"`, []string{"A=a \"b\" \\ $c ` \\n"}},
		{"quoted blanks kept", `A="  x  "  `, []string{"A=  x  "}},
		{"empty quotes", `A=""` + "\nB=''", []string{"A=", "B="}},
		{"later wins is the caller's", "A=1\nA=2", []string{"A=1", "A=2"}},
		{"names", "_=1\na1_B=2", []string{"_=1", "a1_B=2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEnvFile("t.env", []byte(tt.src))
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseEnvFileErrors(t *testing.T) {
	tests := []struct{ name, src, want string }{
		{"no equals", "A=1\n  JUSTNAME\n", `2:3: want NAME=VALUE, not "JUSTNAME"`},
		{"bad name", "1A=x", `1:1: invalid name "1A": use letters, digits and _, not starting with a digit`},
		{"dash in name", " A-B=x", `1:2: invalid name "A-B": use letters, digits and _, not starting with a digit`},
		{"empty name", "=x", `1:1: invalid name "": use letters, digits and _, not starting with a digit`},
		{"export", "export A=1", `1:1: invalid name "export A": write NAME=VALUE without export`},
		{"unterminated double", `A= "abc`, `1:4: unterminated double quote`},
		{"unterminated single", `A='abc`, `1:3: unterminated single quote`},
		{"escaped close", `A="abc\"`, `1:3: unterminated double quote`},
		{"spans lines", "A=\"a\nb\"", "1:3: unterminated double quote\n2:1: want NAME=VALUE, not \"b\\\"\""},
		{"after quote", `A="a"b`, `1:6: text after the closing quote (quote the whole value)`},
		{"comment after quote", `A='a' # c`, `1:7: text after the closing quote (quote the whole value)`},
		{"NUL", "A=a\x00b", `1:4: NUL byte in line`},
		{"every line", "1A=x\nok=1\nB", "1:1: invalid name \"1A\": use letters, digits and _, not starting with a digit\n3:1: want NAME=VALUE, not \"B\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEnvFile("t.env", []byte(tt.src))
			if err == nil {
				t.Fatalf("got %q, want errors %s", got, tt.want)
			}
			if got != nil {
				t.Errorf("got %q with errors, want nothing", got)
			}
			want := "t.env:" + strings.ReplaceAll(tt.want, "\n", "\nt.env:")
			if err.Error() != want {
				t.Errorf("got\n%v\nwant\n%s", err, want)
			}
		})
	}
}

func TestReadEnvFiles(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.env")
	b := filepath.Join(dir, "b.env")
	missing := filepath.Join(dir, "missing.env")
	os.WriteFile(a, []byte("A=1\nB=1\n"), 0o644)
	os.WriteFile(b, []byte("B=2\n"), 0o644)

	got, err := ReadEnvFiles([]EnvFile{{Path: a}, {Path: missing, Optional: true}, {Path: b}})
	if want := []string{"A=1", "B=1", "B=2"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, %v, want %q", got, err, want)
	}

	_, err = ReadEnvFiles([]EnvFile{{Path: a}, {Path: missing}})
	if want := `cannot read env file "` + missing + `": no such file or directory`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("got %v, want an error that is fs.ErrNotExist", err)
	}

	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.env")
	os.WriteFile(big, []byte("A="+strings.Repeat("x", MaxEnvFile)), 0o644)
	for path, want := range map[string]string{
		fifo: `cannot read env file "` + fifo + `": not a regular file`, // not waited on
		big:  `cannot read env file "` + big + `": larger than 1048576 bytes`,
		dir:  `cannot read env file "` + dir + `": not a regular file`,
	} {
		if _, err := ReadEnvFile(path); err == nil || err.Error() != want {
			t.Errorf("got %v, want %s", err, want)
		}
	}
}

// FuzzEnvFile checks that ParseEnvFile never panics, and that what
// it accepts is NAME=VALUE with a valid NAME and never a newline or NUL.
func FuzzEnvFile(f *testing.F) {
	for _, seed := range []string{"A=1\n# c\n; c\n B = 'x' \nC=\"a\\\"b\"\r\n", "export A=1", "A=\"x", "A='x'y", "\x00"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		env, err := ParseEnvFile("fuzz.env", src)
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 || env != nil {
				t.Fatalf("got %q, %v, want no variables and a non-empty ErrorList", env, err)
			}
			return
		}
		for _, kv := range env {
			name, _, ok := strings.Cut(kv, "=")
			if !ok || !validEnvName(name) || strings.ContainsAny(kv, "\n\x00") {
				t.Fatalf("got variable %q", kv)
			}
		}
	})
}
