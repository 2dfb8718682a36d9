package builder_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/cli"
)

// TestLocalSuccessNamesTheFile: a local build without --upload-clouds
// (guest-less: the base image file is the built image, no boot, no cloud)
// prints the absolute path of the file it wrote, on the "Image file:" line
// and after the success header, where the charm's parser (the last word
// of stdout) reads the result; the file is there.
func TestLocalSuccessNamesTheFile(t *testing.T) {
	requireQemu(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	recipe := writeFileIn(t, dir, "user-data", "#cloud-config\n")
	verify := writeFileIn(t, dir, "verify.sh", "#!/bin/sh\ntrue\n")
	base := filepath.Join(dir, "base.qcow2")
	runTool(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "16M")
	if err := os.Mkdir(filepath.Join(dir, "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir) // --output is relative: stdout names it absolute
	env := newLocalEnv(t)
	l := WithoutGuest(&Local{OpenStack: &OpenStack{Getenv: env.getenv, Version: "output-test"}})
	code, stdout, stderr := runLocalCLI(ctx, l, env, "run", "img", "--builder", "local", "--arch", "x64",
		"--base-image-file", base, "--user-data", recipe, "--skip-default-checks", "--verify-script", verify,
		"--output", "out/image.qcow2")
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr)
	}
	out := filepath.Join(dir, "out", "image.qcow2")
	if want := cli.LocalFileHeader + out + "\n" + cli.SuccessHeader + out; stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
	if f := strings.Fields(stdout); len(f) == 0 || f[len(f)-1] != out {
		t.Errorf("the charm's parser would read %q, want %s", f, out)
	}
	if _, err := os.Stat(out); err != nil {
		t.Errorf("the file stdout names: %v", err)
	}
}
