package qemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// SeedVolumeID is the ISO9660 volume label cloud-init's NoCloud datasource
// looks for.
const SeedVolumeID = "cidata"

// defaultHostname is the guest's host name when Spec.Hostname is empty.
const defaultHostname = "grib-builder"

// seedFiles returns the files of the NoCloud seed: user-data as given, and
// meta-data as given or, when empty, a fresh instance-id, the host name and
// the SSH public keys cloud-init installs for the default user (as Nova's
// metadata does for a keypair), so user-data stays the same for both
// builders.
func seedFiles(userData, metaData []byte, instanceID, hostname string, keys []string) map[string][]byte {
	if len(metaData) == 0 {
		metaData = fmt.Appendf(nil, "instance-id: %s\nlocal-hostname: %s\n", instanceID, hostname)
		if len(keys) > 0 {
			metaData = append(metaData, "public-keys:\n"...)
			for _, k := range keys {
				q, _ := json.Marshal(strings.TrimSpace(k)) // a JSON string is a YAML string
				metaData = fmt.Appendf(metaData, "  - %s\n", q)
			}
		}
	}
	if userData == nil {
		userData = []byte{}
	}
	return map[string][]byte{"user-data": userData, "meta-data": metaData}
}

// newInstanceID returns "grib-" and 16 random hex digits: each boot of a
// build is a new instance to cloud-init.
func newInstanceID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails on Linux
	return "grib-" + hex.EncodeToString(b)
}

// isoTool is a program that writes ISO9660 images with Rock Ridge and Joliet.
type isoTool struct {
	path   string
	prefix []string // arguments before the mkisofs-style ones
}

// findISOTool looks for genisoimage, then xorriso, then mkisofs.
func findISOTool(lookPath func(string) (string, error)) (isoTool, error) {
	for _, c := range []struct {
		name   string
		prefix []string
	}{{"genisoimage", nil}, {"xorriso", []string{"-as", "mkisofs"}}, {"mkisofs", nil}} {
		if p, err := lookPath(c.name); err == nil {
			return isoTool{path: p, prefix: c.prefix}, nil
		}
	}
	return isoTool{}, fmt.Errorf("no ISO9660 tool for the NoCloud seed: install genisoimage or xorriso")
}

// seedArgs is the command line that writes files (names in dir) to out.
func (t isoTool) seedArgs(out string, names []string) []string {
	args := slices.Clone(t.prefix)
	args = append(args, "-quiet", "-output", out, "-volid", SeedVolumeID, "-joliet", "-rock")
	return append(args, names...)
}

// writeSeed writes files into a private directory under dir and packs them
// into the ISO out (the tool's whole environment is env); the directory is
// removed again.
func writeSeed(ctx context.Context, env []string, tool isoTool, dir, out string, files map[string][]byte) error {
	src, err := os.MkdirTemp(dir, "seed-*")
	if err != nil {
		return fmt.Errorf("NoCloud seed: %w", err)
	}
	defer os.RemoveAll(src)
	names := make([]string, 0, len(files))
	for name, data := range files {
		if strings.ContainsRune(name, '/') {
			return fmt.Errorf("NoCloud seed: bad file name %q", name)
		}
		if err := os.WriteFile(filepath.Join(src, name), data, 0o600); err != nil {
			return fmt.Errorf("NoCloud seed: %w", err)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	cmd := exec.CommandContext(ctx, tool.path, tool.seedArgs(out, names)...)
	cmd.Dir = src
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("NoCloud seed: %s: %w: %s", filepath.Base(tool.path), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
