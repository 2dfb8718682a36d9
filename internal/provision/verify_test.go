package provision

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

var update = flag.Bool("update", false, "rewrite golden files")

// verifyGuest answers the default checks: each name maps to an answer.
func verifyGuest(t *testing.T, version string, answers map[string]answer) *fakeGuest {
	table := map[string]answer{}
	for _, c := range DefaultChecks(version).List {
		a, ok := answers[c.Name]
		if !ok {
			t.Fatalf("no answer for check %q", c.Name)
		}
		table[c.Command] = a
	}
	return startFakeGuest(t, scripted(t, table))
}

func healthyAnswers() map[string]answer {
	return map[string]answer{
		"runner version": {stdout: "2.321.0\n"},
		"docker":         {stdout: "Docker version 27.3.1, build ce12230\n"},
		"gh":             {stdout: "gh version 2.62.0 (2024-11-14)\n"},
		"yq":             {stdout: "yq (https://github.com/mikefarah/yq/) version v4.44.5\n"},
		"runner user":    {stdout: "uid=1001(runner) gid=1001(runner) groups=1001(runner),988(docker)\n"},
	}
}

func TestVerify(t *testing.T) {
	tests := []struct {
		name      string
		change    map[string]answer
		wantInMsg []string
	}{
		{name: "all pass"},
		{
			name:      "wrong runner version",
			change:    map[string]answer{"runner version": {stdout: "2.320.0\n"}},
			wantInMsg: []string{`runner version: printed "2.320.0", want "2.321.0"`},
		},
		{
			name: "missing tools, all reported",
			change: map[string]answer{
				"gh":          {stderr: "bash: line 1: gh: command not found\n", code: 127},
				"runner user": {stderr: "id: 'runner': no such user\n", code: 1},
			},
			wantInMsg: []string{"gh: exited with status 127", "runner user: exited with status 1", "gh: command not found", "no such user"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			answers := healthyAnswers()
			for k, v := range tt.change {
				answers[k] = v
			}
			g := verifyGuest(t, "2.321.0", answers).dial(t)
			err := g.Verify(context.Background(), DefaultChecks("2.321.0"))
			if len(tt.wantInMsg) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errs.Is(err, errs.KindVerify) {
				t.Fatalf("got %v, want a verify error", err)
			}
			for _, s := range tt.wantInMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestVerifyFailureMessage(t *testing.T) {
	answers := healthyAnswers()
	answers["runner version"] = answer{stdout: "2.320.0\n"}
	answers["docker"] = answer{stderr: "bash: line 1: docker: command not found\n", code: 127}
	f := verifyGuest(t, "2.321.0", answers)
	err := f.dial(t).Verify(context.Background(), DefaultChecks("2.321.0"))
	if err == nil {
		t.Fatal("no error")
	}
	got := strings.ReplaceAll(err.Error(), f.addr, "ADDR") + "\n"
	golden := filepath.Join("testdata", "verify-failure.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("error text changed (go test -update to accept):\n%s\nwant:\n%s", got, want)
	}
}

func TestVerifyScript(t *testing.T) {
	_, g, sandbox := shellGuest(t)
	checks := Checks{List: []Check{{Name: "shell", Command: "true"}}}
	var out strings.Builder
	checks.Out = &out
	checks.Script = []byte("#!/bin/sh\necho checking\ntest -e /nonexistent/marker || { echo 'marker missing'; exit 1; }\n")
	err := g.Verify(context.Background(), checks)
	if !errs.Is(err, errs.KindVerify) || !strings.Contains(err.Error(), "verify script exited with status 1") ||
		!strings.Contains(err.Error(), "marker missing") {
		t.Fatalf("got %v, want a verify error naming the script and its output", err)
	}
	if !strings.Contains(out.String(), "checking") {
		t.Errorf("script output not streamed: %q", out.String())
	}
	checks.Script = []byte("#!/bin/sh\necho fine\n")
	if err := g.Verify(context.Background(), checks); err != nil {
		t.Fatal(err)
	}
	if left := leftoverTempDirs(t, sandbox); len(left) != 0 {
		t.Errorf("temporary directories left: %v", left)
	}
}

func TestVerifyCancelIsInterrupted(t *testing.T) {
	g := verifyGuest(t, "2.321.0", healthyAnswers()).dial(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Verify(ctx, DefaultChecks("2.321.0")); !errs.Is(err, errs.KindInterrupted) {
		t.Fatalf("got %v, want interrupted", err)
	}
}

// Whatever leaves the guest is redacted with the Target's secrets, whichever
// command printed it: a build script stores a secret in a file; the verify
// script and a check print it; a log holds it across lines. Neither the
// streamed output nor the error holds any line of it.
func TestGuestRedactsWhatVerifyPrints(t *testing.T) {
	sandbox := t.TempDir()
	f := startFakeGuest(t, runShell(sandbox))
	secret := "first-line-Zq81\nsecond-line-Zq82\nthird-line-Zq83"
	target := f.target(KnownHostKeys(ssh.FingerprintSHA256(f.hostKey.PublicKey())))
	target.Secrets = map[string]string{"TOKEN": secret}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, err := Dial(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.tmpBase = sandbox
	stored := filepath.Join(sandbox, "stored")
	var out strings.Builder
	build := fmt.Sprintf("#!/bin/sh\nprintf '%%s' \"$TOKEN\" > %s\n", stored)
	if err := g.RunScript(ctx, []byte(build), target.Secrets, &out); err != nil {
		t.Fatal(err)
	}
	verify := fmt.Sprintf("#!/bin/sh\necho \"found: $(cat %s)\"\ncat %s >&2\nexit 1\n", stored, stored)
	err = g.Verify(ctx, Checks{
		List:   []Check{{Name: "stored token", Command: "cat " + stored + "; exit 2"}},
		Script: []byte(verify),
		Out:    &out,
	})
	if !errs.Is(err, errs.KindVerify) {
		t.Fatalf("Verify = %v, want a verify error", err)
	}
	if !strings.Contains(out.String(), "found: "+Mask) || !strings.Contains(err.Error(), Mask) {
		t.Errorf("the secret was not printed and masked:\noutput %q\nerror %q", out.String(), err)
	}
	// A log whose last 2 lines cut the secret: masked before the cut.
	log := filepath.Join(sandbox, "log")
	if err := os.WriteFile(log, []byte("before\n"+secret+"\nafter\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tail := g.Tail(ctx, log, 2)
	if tail != Mask+"\nafter" {
		t.Errorf("Tail = %q, want %q", tail, Mask+"\nafter")
	}
	// What a command prints on stderr goes into messages: masked too.
	_, stderr, _ := g.output(ctx, "cat "+stored+" >&2; exit 1", nil)
	if string(stderr) != Mask {
		t.Errorf("stderr = %q, want %q", stderr, Mask)
	}
	for _, where := range []string{out.String(), err.Error(), tail, string(stderr)} {
		for line := range strings.Lines(secret) {
			if strings.Contains(where, strings.TrimSpace(line)) {
				t.Errorf("%q of the secret leaked: %q", strings.TrimSpace(line), where)
			}
		}
	}
}

// A command's output cut at the capture cap inside a secret keeps no part
// of it: the cut end of the text is the secret's start, which no mask
// matches, so it is dropped.
func TestRedactCappedDropsACutSecret(t *testing.T) {
	g := &Guest{target: Target{Secrets: map[string]string{"TOKEN": "SECRET-Zq9"}}}
	for _, tc := range []struct{ name, write, want string }{
		{"cut inside the secret", "log: SECRET-Zq9 ok\nlast: SECRET-Zq9", "log: " + Mask + " ok\nlast: "},
		{"ends with a whole secret", "log: SECRET-Zq9", "log: " + Mask},
		{"not cut", "log: SEC", "log: SEC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &cappedBuffer{max: len(tc.write)}
			if tc.name == "cut inside the secret" {
				c.max = len(tc.write) - 4 // "last: SECRET-" is kept
			}
			_, _ = c.Write([]byte(tc.write))
			if got := g.redactCapped(c); got != tc.want {
				t.Errorf("redactCapped = %q, want %q", got, tc.want)
			}
		})
	}
}
