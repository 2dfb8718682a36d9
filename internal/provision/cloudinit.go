package provision

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Where cloud-init keeps its state and log.
const (
	cloudInitStatusFile = "/run/cloud-init/status.json"
	cloudInitResultFile = "/run/cloud-init/result.json"
	cloudInitOutputLog  = "/var/log/cloud-init-output.log"
	cloudInitStatusCmd  = "cloud-init status --format json"
	cloudInitLogLines   = 40
)

// State is cloud-init's run state, normalised across versions.
type State string

// The states WaitCloudInit tells apart.
const (
	StateNotStarted State = "not started"
	StateRunning    State = "running"
	StateDone       State = "done"
	StateDegraded   State = "degraded" // done, with recoverable errors (warnings)
	StateError      State = "error"
	StateDisabled   State = "disabled"
)

// Finished reports whether cloud-init will not change state any more in
// this boot.
func (s State) Finished() bool {
	return s == StateDone || s == StateDegraded || s == StateError || s == StateDisabled
}

// Status is what cloud-init reports about its run.
type Status struct {
	State             State
	Extended          string              // cloud-init's extended_status, when it reports one
	Detail            string              // e.g. the datasource
	Errors            []string            // errors of all stages
	RecoverableErrors map[string][]string // by level, e.g. "WARNING", "DEPRECATED"
	Source            string              // where the status was read
}

// WaitCloudInit polls cloud-init's status until it finishes or ctx ends,
// from short intervals growing to 2 s. It prefers `cloud-init status
// --format json` and falls back to /run/cloud-init/status.json and
// result.json where that flag is missing (cloud-init 22.4 on Debian 12).
//
// Done and degraded (recoverable errors only) return a nil error; degraded's
// warnings are logged. Error and disabled return a KindBuild error carrying
// cloud-init's error list and the tail of /var/log/cloud-init-output.log.
//
// A lost SSH connection (EOF, a reset, a read without an answer) does not
// end the wait: it redials the same address, accepting only the host key of
// the first dial, with the wait's backoff and deadline, and reads on. A
// different host key ends the wait with a KindBuild error.
func (g *Guest) WaitCloudInit(ctx context.Context) (Status, error) {
	interval := g.poll
	filesOnly := false
	var last Status
	var lastErr error
	for {
		c := g.current()
		st, err := g.readCloudInitStatus(ctx, &filesOnly)
		if err == nil {
			if st.State != last.State {
				g.log.Debug("cloud-init status", "state", st.State, "source", st.Source)
			}
			last, lastErr = st, nil
			if st.State.Finished() {
				break
			}
		} else if ctx.Err() == nil {
			lastErr = err
			g.log.Debug("reading cloud-init status", "err", err)
			if g.lost(c, err) {
				if rerr := g.reconnect(ctx, err); rerr != nil {
					if ctx.Err() != nil {
						return last, g.cloudInitTimeout(ctx, last, lastErr)
					}
					return last, rerr
				}
				continue // read again on the new connection
			}
		}
		if g.sleep(ctx, interval) != nil {
			return last, g.cloudInitTimeout(ctx, last, lastErr)
		}
		interval = min(2*interval, maxRetryInterval)
	}

	switch last.State {
	case StateDegraded:
		recoverable := map[string][]string{}
		for level, msgs := range last.RecoverableErrors {
			recoverable[level] = g.redactAll(msgs)
		}
		g.log.Warn("cloud-init finished with recoverable errors", "recoverable_errors", recoverable)
		return last, nil
	case StateError:
		return last, classified(errs.KindBuild, &Failure{
			What:   fmt.Sprintf("cloud-init failed on %s (status %q)", g.addr, last.extendedOrState()),
			Errors: g.redactAll(last.Errors),
			Tail:   g.Tail(context.WithoutCancel(ctx), cloudInitOutputLog, cloudInitLogLines),
			TailOf: cloudInitOutputLog,
		})
	case StateDisabled:
		return last, classified(errs.KindBuild, &Failure{
			What: fmt.Sprintf("cloud-init is disabled on %s, so the recipe never ran; enable cloud-init in the base image", g.addr),
		})
	default:
		return last, nil
	}
}

func (g *Guest) cloudInitTimeout(ctx context.Context, last Status, lastErr error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctxError(ctx, "waiting for cloud-init")
	}
	what := fmt.Sprintf("cloud-init on %s did not finish before the cloud-init deadline", g.addr)
	if last.State != "" {
		what += fmt.Sprintf(" (last status %q)", last.extendedOrState())
	}
	if lastErr != nil {
		what += fmt.Sprintf(" (last error: %s)", g.redact(lastErr.Error(), nil))
	}
	tailCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	return classified(errs.KindBuild, &Failure{
		What:   what + "; raise the cloud-init timeout or check the recipe",
		Errors: g.redactAll(last.Errors),
		Tail:   g.Tail(tailCtx, cloudInitOutputLog, cloudInitLogLines),
		TailOf: cloudInitOutputLog,
	})
}

// redactAll masks the Target's secrets in each message from the guest.
func (g *Guest) redactAll(msgs []string) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, g.redact(m, nil))
	}
	return out
}

func (s Status) extendedOrState() string {
	if s.Extended != "" {
		return s.Extended
	}
	return string(s.State)
}

// readCloudInitStatus is cloudInitStatus bounded by the read timeout; a
// read that gets no answer by then fails with errUnresponsive.
func (g *Guest) readCloudInitStatus(ctx context.Context, filesOnly *bool) (Status, error) {
	rctx, cancel := context.WithTimeout(ctx, g.readTimeout)
	defer cancel()
	st, err := g.cloudInitStatus(rctx, filesOnly)
	if err != nil && ctx.Err() == nil && rctx.Err() != nil {
		return Status{}, fmt.Errorf("%w: reading cloud-init's status took over %s", errUnresponsive, g.readTimeout)
	}
	return st, err
}

// cloudInitStatus reads the status once. It switches *filesOnly on for good
// when the guest's cloud-init does not answer `status --format json`.
func (g *Guest) cloudInitStatus(ctx context.Context, filesOnly *bool) (Status, error) {
	if !*filesOnly {
		stdout, stderr, err := g.output(ctx, cloudInitStatusCmd, nil)
		// Exit status 1 (error) and 2 (degraded) still print the JSON.
		st, perr := parseStatusJSON(stdout)
		if perr == nil {
			st.Source = cloudInitStatusCmd
			return st, nil
		}
		if _, ok := exitStatus(err); !ok {
			if err == nil {
				err = perr
			}
			return Status{}, fmt.Errorf("%s: %w", cloudInitStatusCmd, err)
		}
		g.log.Debug("cloud-init status has no JSON output; reading its files instead",
			"err", err, "stderr", strings.TrimSpace(string(stderr)))
		*filesOnly = true
	}
	status, err := g.readOptionalFile(ctx, cloudInitStatusFile)
	if err != nil {
		return Status{}, err
	}
	result, err := g.readOptionalFile(ctx, cloudInitResultFile)
	if err != nil {
		return Status{}, err
	}
	disabled := false
	if status == nil {
		// The generator leaves this marker when it disabled cloud-init.
		err := g.run(ctx, "test -e /run/cloud-init/disabled || test -e /etc/cloud/cloud-init.disabled", nil, nil, nil)
		if _, ok := exitStatus(err); err != nil && !ok {
			return Status{}, err
		}
		disabled = err == nil
	}
	st, err := parseStatusFiles(status, result, disabled)
	if err != nil {
		return Status{}, err
	}
	st.Source = "/run/cloud-init/"
	return st, nil
}

// readOptionalFile returns the contents of a world-readable file on the
// guest, or nil when it does not exist.
func (g *Guest) readOptionalFile(ctx context.Context, path string) ([]byte, error) {
	const absent = 44
	q := shellQuote(path)
	stdout, stderr, err := g.output(ctx, fmt.Sprintf("if [ -e %s ]; then exec cat -- %s; else exit %d; fi", q, q, absent), nil)
	if code, ok := exitStatus(err); ok && code == absent {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w: %s", path, err, bytes.TrimSpace(stderr))
	}
	if stdout == nil {
		stdout = []byte{}
	}
	return stdout, nil
}

// statusJSON is the part of `cloud-init status --format json` we read.
// Messages are decoded leniently: a non-string message keeps its JSON text.
type statusJSON struct {
	Status      *string                      `json:"status"`
	Extended    string                       `json:"extended_status"`
	Detail      string                       `json:"detail"`
	Errors      []json.RawMessage            `json:"errors"`
	Recoverable map[string][]json.RawMessage `json:"recoverable_errors"`
}

// parseStatusJSON reads the output of `cloud-init status --format json`.
func parseStatusJSON(data []byte) (Status, error) {
	var raw statusJSON
	if err := json.Unmarshal(data, &raw); err != nil {
		return Status{}, fmt.Errorf("parsing cloud-init status JSON: %w", err)
	}
	if raw.Status == nil {
		return Status{}, errors.New("parsing cloud-init status JSON: no \"status\" field")
	}
	st := Status{
		Extended:          raw.Extended,
		Detail:            raw.Detail,
		Errors:            messages(raw.Errors),
		RecoverableErrors: recoverable(raw.Recoverable),
	}
	// extended_status (cloud-init 23.4+) says "error - running" or "degraded
	// running" while cloud-init still runs; status alone would say "error".
	phase := *raw.Status
	switch ext := raw.Extended; {
	case strings.HasSuffix(ext, "running"):
		phase = "running"
	case strings.HasSuffix(ext, "not started"):
		phase = "not started"
	case strings.HasSuffix(ext, "disabled"):
		phase = "disabled"
	}
	switch phase {
	case "not started", "not run":
		st.State = StateNotStarted
	case "running":
		st.State = StateRunning
	case "disabled":
		st.State = StateDisabled
	case "done", "error":
		st.State = finishedState(*raw.Status == "error" || strings.HasPrefix(raw.Extended, "error"), st)
	default:
		return Status{}, fmt.Errorf("parsing cloud-init status JSON: unknown status %q", *raw.Status)
	}
	return st, nil
}

// finishedState decides between done, degraded and error for a finished run.
func finishedState(reportedError bool, st Status) State {
	switch {
	case reportedError || len(st.Errors) > 0:
		return StateError
	case strings.HasPrefix(st.Extended, "degraded") || len(st.RecoverableErrors) > 0:
		return StateDegraded
	default:
		return StateDone
	}
}

// stageJSON is one stage ("init-local", "init", "modules-config",
// "modules-final") of status.json's v1 object.
type stageJSON struct {
	Errors      []json.RawMessage            `json:"errors"`
	Recoverable map[string][]json.RawMessage `json:"recoverable_errors"`
}

// parseStatusFiles reads /run/cloud-init/status.json and result.json (nil:
// the file does not exist) the way `cloud-init status` does: no status.json
// means not started, no result.json means running, both mean finished.
func parseStatusFiles(statusFile, resultFile []byte, disabled bool) (Status, error) {
	if statusFile == nil {
		if disabled {
			return Status{State: StateDisabled}, nil
		}
		return Status{State: StateNotStarted}, nil
	}
	var status struct {
		V1 map[string]json.RawMessage `json:"v1"`
	}
	if err := json.Unmarshal(statusFile, &status); err != nil {
		return Status{}, fmt.Errorf("parsing %s: %w", cloudInitStatusFile, err)
	}
	if status.V1 == nil {
		return Status{}, fmt.Errorf("parsing %s: no \"v1\" object", cloudInitStatusFile)
	}
	st := Status{RecoverableErrors: map[string][]string{}}
	_ = json.Unmarshal(status.V1["datasource"], &st.Detail) // optional, may be null
	for _, name := range slices.Sorted(maps.Keys(status.V1)) {
		var stage stageJSON
		if v := bytes.TrimSpace(status.V1[name]); len(v) == 0 || v[0] != '{' {
			continue // "datasource", "stage", "last_update": not stages
		}
		if err := json.Unmarshal(status.V1[name], &stage); err != nil {
			return Status{}, fmt.Errorf("parsing %s stage %q: %w", cloudInitStatusFile, name, err)
		}
		st.Errors = append(st.Errors, messages(stage.Errors)...)
		for level, msgs := range recoverable(stage.Recoverable) {
			st.RecoverableErrors[level] = append(st.RecoverableErrors[level], msgs...)
		}
	}
	if len(st.RecoverableErrors) == 0 {
		st.RecoverableErrors = nil
	}
	if resultFile == nil {
		st.State = StateRunning
		return st, nil
	}
	var result struct {
		V1 *struct {
			Errors []json.RawMessage `json:"errors"`
		} `json:"v1"`
	}
	if err := json.Unmarshal(resultFile, &result); err != nil {
		return Status{}, fmt.Errorf("parsing %s: %w", cloudInitResultFile, err)
	}
	if result.V1 == nil {
		return Status{}, fmt.Errorf("parsing %s: no \"v1\" object", cloudInitResultFile)
	}
	for _, m := range messages(result.V1.Errors) {
		if !slices.Contains(st.Errors, m) {
			st.Errors = append(st.Errors, m)
		}
	}
	st.State = finishedState(false, st)
	return st, nil
}

// messages turns a JSON list of messages into strings; non-string entries
// keep their JSON text.
func messages(raws []json.RawMessage) []string {
	var out []string
	for _, r := range raws {
		var s string
		if err := json.Unmarshal(r, &s); err != nil {
			s = string(bytes.TrimSpace(r))
		}
		out = append(out, s)
	}
	return out
}

func recoverable(raw map[string][]json.RawMessage) map[string][]string {
	out := map[string][]string{}
	for level, msgs := range raw {
		if m := messages(msgs); len(m) > 0 {
			out[level] = m
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
