package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// CallbackImage is one image handed to the consumers.
type CallbackImage struct {
	Cloud string      `json:"cloud"`
	Base  config.Base `json:"base"`
	Arch  config.Arch `json:"arch"`
	Name  string      `json:"name"`
	ID    string      `json:"id"`
}

// CallbackFailure is one cell whose build failed.
type CallbackFailure struct {
	Base     config.Base `json:"base"`
	Arch     config.Arch `json:"arch"`
	Name     string      `json:"name"`
	Kind     string      `json:"kind"`
	ExitCode int         `json:"exit_code"`
	Error    string      `json:"error"`
}

// callbackInput is the JSON document a callback reads on stdin.
type callbackInput struct {
	Result   string            `json:"result"` // success or failure
	Images   []CallbackImage   `json:"images"`
	Failures []CallbackFailure `json:"failures,omitempty"`
}

// callbackOutputLimit caps how much of a callback's output is kept for the log.
const callbackOutputLimit = 16 << 10

// runCallback runs argv with args appended and input as JSON on stdin,
// bounded by timeout: at the deadline (or when ctx ends) its whole process
// group is killed. The environment is env. A non-zero exit, a timeout or
// a missing program is an errs.KindCallback error carrying the tail of the
// callback's output.
func runCallback(ctx context.Context, log *slog.Logger, argv, args []string, input callbackInput, timeout time.Duration, env []string) error {
	if len(argv) == 0 {
		return nil
	}
	stdin, err := json.Marshal(input)
	if err != nil {
		return fmt.Errorf("encoding the callback input: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], append(slices.Clone(argv[1:]), args...)...)
	cmd.Stdin = bytes.NewReader(append(stdin, '\n'))
	cmd.Env = env
	out := &tailBuffer{limit: callbackOutputLimit}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The callback's children go too: nothing outlives its deadline.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start).Round(time.Millisecond)
	tail := strings.TrimSpace(out.String())
	if err == nil {
		log.Info("callback succeeded", "callback", argv[0], "result", input.Result, "took", took, "output", lastLines(tail, 20))
		return nil
	}
	why := err.Error()
	switch {
	case errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		why = fmt.Sprintf("did not finish within %s (raise callback.timeout)", timeout)
	case ctx.Err() != nil:
		return fmt.Errorf("callback %s: %w", argv[0], ctx.Err())
	}
	log.Error("callback failed", "callback", argv[0], "result", input.Result, "took", took, "error", why, "output", lastLines(tail, 20))
	msg := fmt.Sprintf("%s callback %s %s", input.Result, argv[0], why)
	if tail != "" {
		msg += ": " + oneLine(lastLines(tail, 3))
	}
	return errs.New(errs.KindCallback, "%s", msg)
}

// callbackEnv is the callback's whole environment: config.ChildEnv (PATH,
// HOME, USER, LOGNAME, TMPDIR, TZ, LANG, LC_*) and the proxy variables,
// taken from getenv (the proxy ones from proxy.host when it is set). No credential reaches it: not the script secrets,
// GITHUB_TOKEN, OS_* nor any variable the configuration reads a secret
// from, even one of those names.
func (c *Config) callbackEnv(getenv func(string) string) []string {
	drop := map[string]bool{config.TokenEnv: true}
	if c.RunnerToken != nil && c.RunnerToken.Env != "" {
		drop[c.RunnerToken.Env] = true
	}
	for _, r := range c.secretRefs() {
		if r.Env != "" {
			drop[r.Env] = true
		}
	}
	out := []string{} // never nil: a nil Env is this process's whole environment
	for _, kv := range config.ChildEnv(c.Build.HostProxy.Getenv(getenv), config.NetworkEnv()...) {
		k, _, _ := strings.Cut(kv, "=")
		if !drop[k] {
			out = append(out, kv)
		}
	}
	return out
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	mu    sync.Mutex
	limit int
	buf   []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.limit {
		b.buf = slices.Clone(b.buf[len(b.buf)-b.limit:])
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
