package cli

import (
	"io"
	"log/slog"
	"os"
	"strings"

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
// --log-file opened for appending (created 0600), both at --log-level.
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
		f, err := os.OpenFile(inv.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return errs.Wrap(errs.KindUsage, err, "--log-file %q: cannot open it for appending", inv.logFile)
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

// quietForProgress applies the terminal rule when a local build (or local
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
