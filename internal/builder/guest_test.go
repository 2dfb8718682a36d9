package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/provision"
)

func TestFetchScript(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok.sh":
			_, _ = io.WriteString(w, "#!/bin/sh\necho hi\n")
		case "/empty.sh":
		case "/big.sh":
			_, _ = w.Write(bytes.Repeat([]byte("#"), maxScriptBytes+1))
		case "/boom.sh":
			http.Error(w, "boom", http.StatusInternalServerError)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	tests := []struct {
		path string
		kind errs.Kind // KindInternal: success
		want string
	}{
		{"/ok.sh?token=s3cret", errs.KindInternal, ""},
		{"/missing.sh", errs.KindNotFound, "HTTP 404"},
		{"/boom.sh", errs.KindBuild, "HTTP 500"},
		{"/empty.sh", errs.KindBuild, "empty"},
		{"/big.sh", errs.KindBuild, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			var logs bytes.Buffer
			data, err := FetchScript(context.Background(), srv.Client(), srv.URL+tt.path, slog.New(slog.NewTextHandler(&logs, nil)))
			if tt.want == "" {
				if err != nil || string(data) != "#!/bin/sh\necho hi\n" {
					t.Fatalf("got %q, %v", data, err)
				}
			} else if errs.KindOf(err) != tt.kind || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %v with %q", err, tt.kind, tt.want)
			}
			for _, out := range []string{logs.String(), errString(err)} {
				if strings.Contains(out, "s3cret") || strings.Contains(out, tt.path) {
					t.Errorf("the URL's path or query was printed: %s", out)
				}
			}
		})
	}
	closed := srv.URL
	srv.Close()
	// The HTTP client's own error names the URL it fetched: only the
	// scheme and host may be shown.
	_, err := FetchScript(context.Background(), nil, closed+"/path/ok.sh?token=s3cret", nil)
	if !errs.Is(err, errs.KindUnreachable) {
		t.Errorf("closed server: %v, want unreachable", err)
	}
	if strings.Contains(errString(err), "s3cret") || strings.Contains(errString(err), "/path/") {
		t.Errorf("closed server: the URL's path or query was printed: %v", err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestChecksFor(t *testing.T) {
	verify := filepath.Join(t.TempDir(), "v.sh")
	if err := os.WriteFile(verify, []byte("#!/bin/sh\ntrue\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := ChecksFor(config.RunSpec{}, "2.330.0", nil)
	if err != nil || len(c.List) != 5 || c.List[0].WantLine != "2.330.0" || c.Script != nil {
		t.Errorf("default checks: %+v, %v", c, err)
	}
	c, err = ChecksFor(config.RunSpec{SkipDefaultChecks: true, VerifyScriptFile: verify}, "", []byte("#!/bin/sh\ntrue\n"))
	if err != nil || len(c.List) != 0 || string(c.Script) != "#!/bin/sh\ntrue\n" {
		t.Errorf("script only: %+v, %v", c, err)
	}
	if _, err := ChecksFor(config.RunSpec{SkipDefaultChecks: true}, "", nil); !errs.Is(err, errs.KindUsage) {
		t.Errorf("no verification at all: %v, want a usage error", err)
	}
}

func TestLineLogger(t *testing.T) {
	var buf bytes.Buffer
	w, flush := outputWriter(nil, slog.New(slog.NewTextHandler(&buf, nil)), "script")
	_, _ = io.WriteString(w, "one\ntw")
	_, _ = io.WriteString(w, "o\r\nthree")
	flush()
	out := buf.String()
	for _, want := range []string{"line=one", "line=two", "line=three", "from=script"} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
	if n := strings.Count(out, "\n"); n != 3 {
		t.Errorf("%d records, want 3: %s", n, out)
	}
}

// A guest step's failure keeps its kind and carries the console's tail,
// redacted.
func TestDecorateGuestError(t *testing.T) {
	cfg := GuestConfig{
		Console: func(context.Context) (string, error) {
			return "boot\nline\nthe password is hunter2\n", nil
		},
		Secrets: map[string]config.Secret{"PW": "hunter2"},
	}
	base := errs.New(errs.KindVerify, "verification failed")
	err := decorateGuestError(context.Background(), cfg, &GuestSession{}, revealAll(cfg.Secrets), base)
	if errs.KindOf(err) != errs.KindVerify || !errors.Is(err, base) {
		t.Fatalf("err = %v: kind %v, want verify wrapping the cause", err, errs.KindOf(err))
	}
	var gf *GuestFailure
	if !errors.As(err, &gf) || !strings.Contains(gf.Console, "the password is "+provision.Mask) {
		t.Fatalf("console tail %q", gf.Console)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("the secret is in the error: %v", err)
	}
	interrupted := errs.New(errs.KindInterrupted, "interrupted")
	if got := decorateGuestError(context.Background(), cfg, &GuestSession{}, nil, interrupted); got != interrupted {
		t.Errorf("an interruption was decorated: %v", got)
	}
}

func TestPrintable(t *testing.T) {
	in := "\x1b[0;32m OK \x1b[0m] Started\r\nbad \xff byte\tx\n"
	if got, want := printable(in), " OK ] Started\nbad ? byte\tx\n"; got != want {
		t.Errorf("printable = %q, want %q", got, want)
	}
}

// The tails are redacted before they are cut and stripped: a secret holding
// a CR or newline, one split by a terminal escape, one the 30-line cut falls
// in, and one in the step's own error all stay masked, in the error and in
// the log.
func TestDecorateGuestErrorRedactsBeforeCutting(t *testing.T) {
	multi := "ml-one-Kx7\r\nml-two-Kx7"
	var console strings.Builder
	console.WriteString("early\n" + multi + "\n")
	for i := range tailLines - 4 { // the last 30 raw lines begin inside the first secret
		fmt.Fprintf(&console, "line %d\n", i)
	}
	console.WriteString("pw: esc\x1b[0m-split-Kx7\n") // the escape splits "esc-split-Kx7"
	console.WriteString("crlf: " + multi + "\n")      // ends the console: in the tail
	secrets := map[string]config.Secret{"MULTI": config.Secret(multi), "ESC": "esc-split-Kx7", "ERR": "in-the-error-Kx7"}
	cfg := GuestConfig{
		Console: func(context.Context) (string, error) { return console.String(), nil },
		Secrets: secrets,
	}
	var logs bytes.Buffer
	cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	base := errs.New(errs.KindVerify, "the verify script printed in-the-error-Kx7")
	err := decorateGuestError(context.Background(), cfg, &GuestSession{}, revealAll(secrets), base)
	var gf *GuestFailure
	if !errors.As(err, &gf) || !errors.Is(err, base) || errs.KindOf(err) != errs.KindVerify {
		t.Fatalf("err = %v, want the verify failure wrapped", err)
	}
	if n := strings.Count(gf.Console, "\n") + 1; n != tailLines || !strings.Contains(gf.Console, provision.Mask+"\nline 0") {
		t.Errorf("console tail (%d lines) lacks the first secret, masked whole: %q", n, gf.Console)
	}
	for _, want := range []string{"pw: " + provision.Mask, "crlf: " + provision.Mask, "printed " + provision.Mask} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %q", want, err)
		}
	}
	for _, where := range []string{err.Error(), gf.Console, logs.String()} {
		for _, part := range []string{"Kx7", "ml-one", "ml-two", "split"} {
			if strings.Contains(where, part) {
				t.Errorf("%q of a secret leaked: %q", part, where)
			}
		}
	}
}

// --zero-free-space reaches the guest steps, and "clean" gets the time
// zeroing takes.
func TestZeroFreeSpaceWiring(t *testing.T) {
	for _, zero := range []bool{false, true} {
		cfg := jobGuestConfig(Job{Spec: config.RunSpec{ZeroFreeSpace: zero}}, nil, nil)
		if cfg.ZeroFreeSpace != zero {
			t.Errorf("ZeroFreeSpace %v reached the guest config as %v", zero, cfg.ZeroFreeSpace)
		}
		want := guestCleanTimeout
		if zero {
			want += guestZeroTimeout
		}
		for _, s := range guestSteps(cfg, nil, &GuestSession{}) {
			if s.Name == "clean" && s.Timeout != want {
				t.Errorf("zero %v: clean's timeout %s, want %s", zero, s.Timeout, want)
			}
		}
	}
}
