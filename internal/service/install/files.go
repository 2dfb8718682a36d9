// Package install puts the builder host's files in place: it writes files
// atomically and only when their content or mode changed, renders the
// schedule (a systemd service and timer, or a cron entry) and activates it.
// Every path is taken relative to a root directory, so tests install into a
// temporary tree and touch nothing of the host.
package install

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/runner-image-builder/github-runner-image-builder/internal/atomicfile"
)

// WriteAtomic writes data to a temporary file beside path with mode perm,
// fsyncs it and renames it over path: a reader sees the old file or the new
// one, never a part. Missing parent directories are created 0755.
func WriteAtomic(path string, data []byte, perm fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return atomicfile.Write(path, data, perm)
}

// WriteIfChanged writes data to path atomically unless path already holds
// exactly data with mode perm; it reports whether it wrote. An existing file
// with the right content but another mode is rewritten (so a loose clouds.yaml
// is tightened to 0600).
func WriteIfChanged(path string, data []byte, perm fs.FileMode) (bool, error) {
	same, err := Same(path, data, perm)
	if err != nil {
		return false, err
	}
	if same {
		return false, nil
	}
	return true, WriteAtomic(path, data, perm)
}

// Same reports whether path is a regular file holding exactly data with mode perm.
func Same(path string, data []byte, perm fs.FileMode) (bool, error) {
	st, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("reading %s: %w", path, err)
	case !st.Mode().IsRegular() || st.Mode().Perm() != perm || st.Size() != int64(len(data)):
		return false, nil
	}
	cur, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	return bytes.Equal(cur, data), nil
}

// RemoveIfExists removes path and reports whether it existed.
func RemoveIfExists(path string) (bool, error) {
	err := os.Remove(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("removing %s: %w", path, err)
	}
}

// under joins an absolute target path to root ("" or "/" is the real system).
func under(root, path string) string {
	if root == "" || root == "/" {
		return path
	}
	return filepath.Join(root, path)
}
