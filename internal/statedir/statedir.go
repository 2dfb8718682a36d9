// Package statedir keeps the builder host's per-prefix state: the ed25519
// key the builders are reached with (private key 0600 in a 0700 directory)
// and the flock-based locks that keep concurrent runs from stepping on each
// other. Each prefix has its own directory, so runs with different prefixes
// share nothing.
package statedir

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/atomicfile"
)

// File names inside a prefix directory.
const (
	KeyFile       = "id_ed25519"
	PublicKeyFile = "id_ed25519.pub"
	keyLockFile   = "key.lock"
)

// Key is the builders' SSH key of one prefix.
type Key struct {
	Signer        ssh.Signer // for golang.org/x/crypto/ssh client configs
	AuthorizedKey string     // "ssh-ed25519 AAAA... comment", no newline: for Nova keypairs and cloud-init
	Path          string     // the private key file (0600)
}

// EnsureKey returns the ed25519 key kept in dir, generating it on first use.
// dir is created 0700 (and tightened to 0700 if it exists); the private key is
// written 0600 atomically. Concurrent callers, in this process or others,
// serialise on a lock file in dir, so they all end with the same key.
func EnsureKey(ctx context.Context, dir string) (Key, error) {
	if err := ensureDir(dir); err != nil {
		return Key{}, err
	}
	unlock, err := Lock(ctx, filepath.Join(dir, keyLockFile))
	if err != nil {
		return Key{}, fmt.Errorf("locking the SSH key in %s: %w", dir, err)
	}
	defer unlock()

	path := filepath.Join(dir, KeyFile)
	pemBytes, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return createKey(dir, path)
	case err != nil:
		return Key{}, fmt.Errorf("reading SSH key %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return Key{}, fmt.Errorf("restricting SSH key %s to 0600: %w", path, err)
	}
	signer, err := ssh.ParsePrivateKey(pemBytes)
	if err != nil {
		return Key{}, fmt.Errorf("SSH key %s is not a usable private key (move it away to get a new one): %w", path, err)
	}
	return Key{Signer: signer, AuthorizedKey: authorizedLine(signer.PublicKey(), comment(dir)), Path: path}, nil
}

// createKey generates a key and writes it to path and path's .pub file.
func createKey(dir, path string) (Key, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, fmt.Errorf("generating an ed25519 key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment(dir))
	if err != nil {
		return Key{}, fmt.Errorf("encoding the SSH key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return Key{}, fmt.Errorf("encoding the SSH key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return Key{}, fmt.Errorf("encoding the SSH key: %w", err)
	}
	line := authorizedLine(sshPub, comment(dir))
	if err := atomicfile.Write(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return Key{}, err
	}
	if err := atomicfile.Write(filepath.Join(dir, PublicKeyFile), []byte(line+"\n"), 0o644); err != nil {
		return Key{}, err
	}
	return Key{Signer: signer, AuthorizedKey: line, Path: path}, nil
}

func comment(dir string) string { return "github-runner-image-builder@" + filepath.Base(dir) }

func authorizedLine(k ssh.PublicKey, comment string) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " " + comment
}

// ensureDir creates dir 0700, or tightens an existing one to 0700.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("restricting state directory %s to 0700: %w", dir, err)
	}
	return nil
}
