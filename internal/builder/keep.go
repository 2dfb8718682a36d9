package builder

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/runner-image-builder/github-runner-image-builder/internal/atomicfile"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

// keptBuilder describes the kept server of b after its build failed with
// err, writing the pinned host key (if SSH answered) to a known_hosts file
// in the prefix's state directory.
func (b *osBuild) keptBuilder(err error) error {
	k := &config.KeptBuilder{Err: err, Cloud: b.spec.Cloud, Prefix: b.spec.Prefix, Server: b.serverID, Name: b.builderName()}
	e := b.sess.endpoint()
	if e == nil {
		return k
	}
	addr, user, hostKey := e.addr, e.user, e.hostKey
	dir, derr := config.StateDir(b.o.getenv(), b.spec.Prefix)
	if derr != nil || hostKey == nil {
		return k
	}
	path := filepath.Join(dir, "kept-"+b.serverID+".known_hosts")
	if werr := writeKnownHosts(path, addr, hostKey); werr != nil {
		b.log.Warn("cannot write the kept builder's known_hosts file", "path", path, "error", werr)
		return k
	}
	k.Addr, k.User, k.KeyFile, k.KnownHosts, k.Jump = addr, user, b.key.Path, path, b.spec.SSHJump
	return k
}

// removeKeptKnownHosts removes the known_hosts file keptBuilder wrote for
// server id, if any (sweep of that server).
func removeKeptKnownHosts(getenv func(string) string, prefix, id string) {
	if dir, err := config.StateDir(getenv, prefix); err == nil {
		_ = os.Remove(filepath.Join(dir, "kept-"+id+".known_hosts"))
	}
}

// keepLog is the log line of a kept builder.
func keepLog(id string) string {
	return fmt.Sprintf("builder server %s kept for debugging (--keep-on-failure)", id)
}

// writeKnownHosts writes a known_hosts file (0600) that holds hostKey for addr.
func writeKnownHosts(path, addr string, hostKey ssh.PublicKey) error {
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, hostKey) + "\n"
	return atomicfile.Write(path, []byte(line), 0o600)
}
