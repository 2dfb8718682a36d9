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
// --log-file opened for appending (created 0600).
func (inv *invocation) setupLogging() error {
	level, err := ParseLogLevel(inv.logLevel)
	if err != nil {
		return err
	}
	format := strings.ToLower(strings.TrimSpace(inv.logFormat))
	if format != "text" && format != "json" {
		return errs.Usage("--log-format %q: use text or json", inv.logFormat)
	}
	var w io.Writer = inv.app.Stderr
	if inv.logFile != "" {
		f, err := os.OpenFile(inv.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return errs.Wrap(errs.KindUsage, err, "--log-file %q: cannot open it for appending", inv.logFile)
		}
		inv.closeFile = f.Close
		w = io.MultiWriter(inv.app.Stderr, f)
	}
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		inv.log = slog.New(slog.NewJSONHandler(w, opts))
	} else {
		inv.log = slog.New(slog.NewTextHandler(w, opts))
	}
	return nil
}

// logger is the invocation's logger (a discarding one before setup).
func (inv *invocation) logger() *slog.Logger {
	if inv.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return inv.log
}
