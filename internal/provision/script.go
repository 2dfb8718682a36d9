package provision

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// pushCommand makes a root-only directory on tmpfs, writes stdin to
// "script" in it, and prints the directory. Its arguments: the tmpfs base.
const pushCommand = `set -eu
umask 077
d=$(mktemp -d "$1/grib.XXXXXXXX")
cat > "$d/script"
chmod 0700 "$d/script"
printf '%s' "$d"`

// runCommand is the fixed, secret-free program that runs a pushed script as
// root. It reads "NAME BASE64VALUE" lines from stdin until EOF, exports each
// decoded value (the decoding keeps trailing newlines), and then replaces
// itself with its arguments (the script's interpreter, per its #! line, and
// the script: /run is often mounted noexec), with stdin from /dev/null and
// stderr joined to stdout. The secrets exist only in this process's memory
// and the script's environment: never in an argument, a file or sshd's
// environment.
const runCommand = `set -eu
while IFS=' ' read -r name value; do
  [ -n "$name" ] || continue
  value=$(printf '%s' "$value" | base64 -d; printf x)
  export "$name=${value%x}"
done
unset name value
exec "$@" </dev/null 2>&1`

// interpreter returns the program and optional argument that run script, the
// way the kernel reads a "#!" line: the interpreter up to the first blank,
// then the rest of the line as one argument. Without a "#!" line, /bin/sh
// runs it, as sudo and the shells do for a text file that is not a binary.
func interpreter(script []byte) []string {
	rest, ok := bytes.CutPrefix(script, []byte("#!"))
	if !ok {
		return []string{"/bin/sh"}
	}
	line, _, _ := bytes.Cut(rest, []byte("\n"))
	line = bytes.Trim(line, " \t")
	if len(line) == 0 {
		return []string{"/bin/sh"}
	}
	end := bytes.IndexAny(line, " \t")
	if end < 0 {
		return []string{string(line)}
	}
	return []string{string(line[:end]), string(bytes.Trim(line[end:], " \t"))}
}

// secretName is what a secret's name must look like: an environment variable.
var secretName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// RunScript runs script as root on the guest and streams its output (stdout
// and stderr joined) to out with every secret value redacted. The script is
// pushed to a root-only directory under /run (tmpfs) and removed afterwards.
// secrets become the script's environment variables; they travel on the SSH
// session's stdin only, so they are on no command line (which sudo logs),
// in no file and not in sshd's environment.
//
// A non-zero exit is a KindBuild error with the exit status and the redacted
// tail of the output. A dead connection is redialled before the script is
// pushed; a connection lost while the script runs is a KindBuild error that
// says so, and the script is not run again (it may not be idempotent).
func (g *Guest) RunScript(ctx context.Context, script []byte, secrets map[string]string, out io.Writer) error {
	stdin, err := encodeSecrets(secrets)
	if err != nil {
		return err
	}
	if err := g.ensureConnected(ctx); err != nil {
		return connectFailed(ctx, "running the build script", err)
	}
	return g.runPushed(ctx, "build script", script, stdin, secrets, out)
}

// encodeSecrets renders secrets as runCommand reads them, in name order.
func encodeSecrets(secrets map[string]string) ([]byte, error) {
	var b bytes.Buffer
	for _, name := range slices.Sorted(maps.Keys(secrets)) {
		if !secretName.MatchString(name) {
			return nil, errs.Usage("script secret name %q is not a valid environment variable name (letters, digits and _, not starting with a digit)", name)
		}
		if strings.ContainsRune(secrets[name], 0) {
			return nil, errs.Usage("script secret %s holds a NUL byte, which an environment variable cannot carry", name)
		}
		b.WriteString(name)
		b.WriteByte(' ')
		b.WriteString(base64.StdEncoding.EncodeToString([]byte(secrets[name])))
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

// runPushed pushes script, runs it as root with stdin fed to runCommand,
// removes it, and classifies a failure. what names the script in errors.
func (g *Guest) runPushed(ctx context.Context, what string, script, stdin []byte, secrets map[string]string, out io.Writer) error {
	if out == nil {
		out = io.Discard
	}
	dir, err := g.pushScript(ctx, script)
	if err != nil {
		if ctx.Err() != nil {
			return ctxError(ctx, fmt.Sprintf("pushing the %s to %s", what, g.addr))
		}
		return errs.Wrap(errs.KindBuild, err, "pushing the %s to %s", what, g.addr)
	}
	defer g.removeTempDir(ctx, dir)

	tail := newTailBuffer(outputTailBytes)
	sink := &lockedWriter{w: io.MultiWriter(out, tail)}
	mask := g.secretsAnd(secrets)
	stdout := NewRedactingWriter(sink, mask)
	stderr := NewRedactingWriter(sink, mask)
	argv := append(interpreter(script), dir+"/script")
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = shellQuote(a)
	}
	cmd := fmt.Sprintf("%s /bin/bash -c %s grib-run %s", g.sudo, shellQuote(runCommand), strings.Join(quoted, " "))
	g.log.Debug("running "+what, "command", cmd)
	c := g.current()
	err = g.run(ctx, cmd, bytes.NewReader(stdin), stdout, stderr)
	_ = stdout.Flush()
	_ = stderr.Flush()
	switch code, isExit := exitStatus(err); {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctxError(ctx, fmt.Sprintf("the %s on %s", what, g.addr))
	case isExit:
		return classified(errs.KindBuild, &Failure{
			What:   fmt.Sprintf("the %s exited with status %d on %s", what, code, g.addr),
			Tail:   tail.String(),
			TailOf: "its output",
		})
	case g.lost(c, err) && !errors.Is(err, errNoSession): // it may have run, in part or whole
		return g.lostWhileRunning(what, err)
	default:
		return errs.Wrap(errs.KindBuild, err, "running the %s on %s", what, g.addr)
	}
}

// pushScript writes script to a fresh root-only directory under g.tmpBase
// and returns the directory.
func (g *Guest) pushScript(ctx context.Context, script []byte) (string, error) {
	ctx, cancel := withDefaultTimeout(ctx, defaultCommandTimeout)
	defer cancel()
	cmd := fmt.Sprintf("%s /bin/sh -c %s grib-push %s", g.sudo, shellQuote(pushCommand), shellQuote(g.tmpBase))
	stdout, stderr, err := g.output(ctx, cmd, bytes.NewReader(script))
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, bytes.TrimSpace(stderr))
	}
	dir := string(stdout)
	name, ok := strings.CutPrefix(dir, g.tmpBase+"/grib.")
	if !ok || !tempSuffix.MatchString(name) {
		return "", fmt.Errorf("unexpected temporary directory %q from the guest", dir)
	}
	g.mu.Lock()
	g.tempDirs = append(g.tempDirs, dir)
	g.mu.Unlock()
	return dir, nil
}

// removeTempDir removes a pushed-script directory, even after ctx ended.
func (g *Guest) removeTempDir(ctx context.Context, dir string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := g.run(ctx, fmt.Sprintf("%s rm -rf -- %s", g.sudo, shellQuote(dir)), nil, nil, nil); err != nil {
		g.log.Warn("removing a temporary directory on the guest (Clean retries)", "dir", dir, "err", err)
		return
	}
	g.mu.Lock()
	g.tempDirs = slices.DeleteFunc(g.tempDirs, func(d string) bool { return d == dir })
	g.mu.Unlock()
}

// tempSuffix is what mktemp puts after "grib." in a directory name.
var tempSuffix = regexp.MustCompile(`^[A-Za-z0-9]{8}$`)
