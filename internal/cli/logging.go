package cli

import (
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// ParseLogLevel accepts the Python tool's --log-level values: debug, info,
// warning, error in any case, or the numbers 10, 20, 30, 40; "warn" too.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug", "10":
		return slog.LevelDebug, nil
	case "info", "20":
		return slog.LevelInfo, nil
	case "warning", "warn", "30":
		return slog.LevelWarn, nil
	case "error", "40":
		return slog.LevelError, nil
	}
	return 0, errs.Usage("--log-level %q: use debug, info, warning or error (or 10, 20, 30, 40)", s)
}

// setupLogging builds the logger from the root flags: stderr, plus
// --log-file opened for appending (see openLogFile), both at --log-level.
// stderr's level can be raised later by quietForProgress.
func (inv *invocation) setupLogging() error {
	level, err := ParseLogLevel(inv.logLevel)
	if err != nil {
		return err
	}
	format := strings.ToLower(strings.TrimSpace(inv.logFormat))
	if format != "text" && format != "json" {
		return errs.Usage("--log-format %q: use text or json", inv.logFormat)
	}
	inv.stderrLevel = new(slog.LevelVar)
	inv.stderrLevel.Set(level)
	h := logHandler(format, inv.app.Stderr, inv.stderrLevel)
	if inv.logFile != "" {
		f, err := openLogFile(inv.logFile)
		if err != nil {
			return err
		}
		inv.closeFile = f.Close
		h = slog.NewMultiHandler(h, logHandler(format, f, level))
	}
	inv.log = slog.New(h)
	return nil
}

func logHandler(format string, w io.Writer, level slog.Leveler) slog.Handler {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// quietForProgress applies the terminal rule when a build (or a local
// init) is about to print its progress lines: on a terminal, stderr then
// gets only the log's warnings and errors, so that the phases are not lost
// between info records; those still go to --log-file, and --log-level
// debug keeps every record on stderr. Off a terminal (a pipe, a file, CI,
// the service's journal) nothing changes: there are no progress lines and
// stderr gets the log at --log-level.
func (inv *invocation) quietForProgress() {
	if !inv.app.Terminal || inv.stderrLevel == nil {
		return
	}
	if l := inv.stderrLevel.Level(); l > slog.LevelDebug && l < slog.LevelWarn {
		inv.stderrLevel.Set(slog.LevelWarn)
	}
}

// logger is the invocation's logger (a discarding one before setup).
func (inv *invocation) logger() *slog.Logger {
	if inv.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return inv.log
}

// openLogFile opens path for appending, creating it 0600. The logs may name
// hosts, images and IDs, so the file is forced to 0600 through the opened
// descriptor (an existing file's looser mode is not kept, and no path can
// be swapped in between), and path itself must not be a symbolic link (the
// link and its target are left untouched) nor anything but a regular file
// (O_NONBLOCK: a FIFO without a reader fails instead of hanging).
func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, errs.Usage("--log-file %q is a symbolic link: give the path of the file itself (nothing was written)", path)
	}
	if err != nil {
		return nil, errs.Wrap(errs.KindUsage, err, "--log-file %q: cannot open it for appending", path)
	}
	if err := forcePrivate(f, path); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// forcePrivate checks the opened f is a regular file and makes it 0600
// (fchmod: the descriptor, not the path).
func forcePrivate(f *os.File, path string) error {
	st, err := f.Stat()
	if err != nil {
		return errs.Wrap(errs.KindUsage, err, "--log-file %q", path)
	}
	if !st.Mode().IsRegular() {
		return errs.Usage("--log-file %q is not a regular file (it is a %s): give a file's path", path, fileType(st.Mode()))
	}
	if err := f.Chmod(0o600); err != nil {
		return errs.Wrap(errs.KindUsage, err, "--log-file %q: cannot make it 0600", path)
	}
	return nil
}

// fileType names a non-regular file's type for an error.
func fileType(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	case m.IsDir():
		return "directory"
	}
	return "special file"
}
