package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// readmeCommands are the commands of the README's first shell block (under
// "## The two commands"), comments and blank lines left out.
func readmeCommands(t *testing.T, readme string) []string {
	t.Helper()
	_, sec, ok := strings.Cut(readme, "\n## The two commands\n")
	if !ok {
		t.Fatal(`README.md has no "## The two commands" section`)
	}
	_, block, ok := strings.Cut(sec, "```sh\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal(`"## The two commands" has no sh code block`)
	}
	var cmds []string
	for _, line := range strings.Split(block, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			cmds = append(cmds, line)
		}
	}
	return cmds
}

// TestReadmeCommands: the README starts with exactly the two commands, the
// main job and every test, and .ci/run is the second. Each works as typed
// for a user with sudo (it re-runs itself through sudo with its arguments)
// and says in one line, exit 2, that it needs root when there is no sudo.
// As root neither calls sudo: CI's first phase runs `bash demo/run.sh` as
// root with a sudo that fails when called.
func TestReadmeCommands(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	cmds := readmeCommands(t, string(data))
	if want := []string{"bash demo/run.sh", "bash .ci/run"}; !slices.Equal(cmds, want) {
		t.Fatalf("the README's two commands are %q; want %q", cmds, want)
	}
	for _, c := range cmds {
		script := strings.Fields(c)[1]
		t.Run(script, func(t *testing.T) {
			bin := t.TempDir()
			record := filepath.Join(bin, "sudo.args")
			fakes := map[string]string{
				// Not root, whoever runs the test.
				"id": "#!/bin/sh\n[ \"$1\" = -u ] && { echo 1000; exit 0; }\nexec /usr/bin/id \"$@\"\n",
				// Records how it was called instead of running anything.
				"sudo": "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + record + "\n",
			}
			for name, body := range fakes {
				if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Symlink("/usr/bin/dirname", filepath.Join(bin, "dirname")); err != nil {
				t.Fatal(err)
			}
			run := func(path string, args ...string) (int, string) {
				cmd := exec.Command("/bin/bash", append([]string{script}, args...)...)
				cmd.Dir = root
				cmd.Env = []string{"PATH=" + path, "HOME=" + bin}
				out, err := cmd.CombinedOutput()
				code := 0
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatal(err)
				}
				return code, string(out)
			}

			// A user with sudo: the script re-runs itself through it.
			code, out := run(bin+":/usr/bin:/bin", "an-arg")
			got, err := os.ReadFile(record)
			if code != 0 || err != nil {
				t.Fatalf("with sudo: exit %d, %v, output %q", code, err, out)
			}
			args := strings.Split(strings.TrimRight(string(got), "\n"), "\n")
			want := []string{"--", "bash", filepath.Join(root, script), "an-arg"}
			if len(args) < len(want) || !slices.Equal(args[len(args)-len(want):], want) {
				t.Errorf("sudo called with %q; want it to end with %q", args, want)
			}

			// A user without sudo: one line, exit 2.
			if err := os.Remove(filepath.Join(bin, "sudo")); err != nil {
				t.Fatal(err)
			}
			code, out = run(bin)
			if code != 2 || strings.Count(out, "\n") != 1 || !strings.Contains(out, "needs root") || !strings.Contains(out, "install sudo") {
				t.Errorf("without sudo: exit %d, output %q; want exit 2 and one line saying it needs root or sudo", code, out)
			}
		})
	}
}
