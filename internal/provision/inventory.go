package provision

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Inventory reads what the guest has installed: the output of
// `dpkg-query -W -f dpkgFormat` and of `snap list` (empty when the guest has
// no snap command). It only reads, so it redials a dead connection first.
func (g *Guest) Inventory(ctx context.Context, dpkgFormat string) (dpkg, snaps []byte, err error) {
	ctx, cancel := withDefaultTimeout(ctx, defaultCommandTimeout)
	defer cancel()
	what := fmt.Sprintf("listing the packages of the guest %s", g.addr)
	if err := g.ensureConnected(ctx); err != nil {
		return nil, nil, connectFailed(ctx, what, err)
	}
	dpkg, stderr, err := g.output(ctx, "dpkg-query -W -f "+shellQuote(dpkgFormat), nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctxError(ctx, what)
		}
		return nil, nil, errs.Wrap(errs.KindBuild, err, "%s: dpkg-query: %s", what, bytes.TrimSpace(stderr))
	}
	snaps, stderr, err = g.output(ctx, snapListCommand, nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctxError(ctx, what)
		}
		// snap list exits 0 with "No snaps are installed yet" on stderr; a
		// failure is a broken snapd, worth failing the build for.
		return nil, nil, errs.Wrap(errs.KindBuild, err, "%s: snap list: %s", what, bytes.TrimSpace(stderr))
	}
	return dpkg, snaps, nil
}

// snapListCommand lists the snaps, or nothing without snap.
const snapListCommand = "if command -v snap >/dev/null 2>&1; then snap list; fi"

// writeFileCommand writes its stdin to the file $1 as root, mode 0644,
// making its directory; the file is replaced whole (a rename), never seen
// half written.
const writeFileCommand = `set -eu
umask 022
mkdir -p "$(dirname "$1")"
cat > "$1.grib-tmp"
chmod 0644 "$1.grib-tmp"
mv -f "$1.grib-tmp" "$1"
sync`

// WriteFile writes data to the file at path on the guest as root, mode
// 0644 (data is sent on stdin, never on a command line). Writing it again
// gives the same file, so it redials a dead connection first.
func (g *Guest) WriteFile(ctx context.Context, path string, data []byte, mode os.FileMode) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultCommandTimeout)
	defer cancel()
	what := fmt.Sprintf("writing %s on the guest %s", path, g.addr)
	if mode != 0o644 {
		return errs.New(errs.KindInternal, "%s: mode %o: only 0644 is supported", what, mode)
	}
	if err := g.ensureConnected(ctx); err != nil {
		return connectFailed(ctx, what, err)
	}
	_, stderr, err := g.output(ctx, fmt.Sprintf("%s /bin/sh -c %s grib-write %s", g.sudo, shellQuote(writeFileCommand), shellQuote(path)),
		strings.NewReader(string(data)))
	if err != nil {
		if ctx.Err() != nil {
			return ctxError(ctx, what)
		}
		return errs.Wrap(errs.KindBuild, err, "%s: %s", what, bytes.TrimSpace(stderr))
	}
	return nil
}
