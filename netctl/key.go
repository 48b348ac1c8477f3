package netctl

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// Limits of the shared key of network control. The key is the file's
// bytes with leading and trailing white space removed, so any text or
// binary secret of this size will do (docs/protocol.md).
const (
	minKey = 16
	maxKey = 4096
)

// LoadKey reads the shared key of network control from path. The file
// must be a regular file that neither group nor others may access. An
// error for a missing file wraps os.ErrNotExist: no key file means no
// network control, which is not a fault.
func LoadKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cannot read key file %q: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read key file %q: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("cannot use key file %q: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("cannot use key file %q: group or others may access it (mode %04o); chmod 600 it", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKey+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read key file %q: %w", path, err)
	}
	key := bytes.TrimSpace(b)
	if len(b) > maxKey || len(key) < minKey {
		return nil, fmt.Errorf("cannot use key file %q: a key must have %d to %d bytes", path, minKey, maxKey)
	}
	return key, nil
}
