package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
)

// maxManifestBytes bounds a manifest file read for a diff.
const maxManifestBytes = 64 << 20

func (inv *invocation) manifestCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "manifest",
		Short: "Show what images hold: their manifests (" + manifest.GuestPath + ")",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return errs.Usage("manifest: give a subcommand: diff (see --help)")
		},
	}
	var dirs []string
	diff := &cobra.Command{
		Use:   "diff OLD NEW",
		Short: "Print the packages added, removed and changed from image OLD to image NEW",
		Long: `Print what changed from OLD to NEW: one line per package or snap, sorted by
name: "+ NAME VERSION" added, "- NAME VERSION" removed, "~ NAME OLD -> NEW"
changed (a snap's name is snap:NAME). Nothing printed: the same software.

OLD and NEW are manifest files (an image's ` + manifest.GuestPath + `, or the
OUTPUT.manifest.json a local build writes beside --output), or image IDs: an
ID is looked up among the manifests this host kept, in every prefix's state
directory ($XDG_STATE_HOME/github-runner-image-builder/PREFIX/manifests) and
in each --manifests-dir (the builder host keeps its own beside latest_file,
in its manifests directory).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return errs.Usage("manifest diff: give two arguments, OLD and NEW (manifest files or image IDs), got %d", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			older, err := inv.loadManifest(args[0], dirs)
			if err != nil {
				return err
			}
			newer, err := inv.loadManifest(args[1], dirs)
			if err != nil {
				return err
			}
			return WriteManifestDiff(inv.app.Stdout, manifest.Diff(older, newer))
		},
	}
	diff.Flags().StringArrayVar(&dirs, "manifests-dir", nil, "also look image IDs up in this directory of <image ID>.json manifests, repeatable")
	cmd.AddCommand(diff)
	return cmd
}

// WriteManifestDiff prints one line per change.
func WriteManifestDiff(w io.Writer, changes []manifest.Change) error {
	var b strings.Builder
	for _, c := range changes {
		b.WriteString(c.String())
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return wrapWrite(err)
}

// loadManifest reads arg's manifest: the file arg, else the kept manifest
// of the image whose ID arg is.
func (inv *invocation) loadManifest(arg string, dirs []string) (manifest.Manifest, error) {
	path, err := inv.findManifest(arg, dirs)
	if err != nil {
		return manifest.Manifest{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return manifest.Manifest{}, errs.Wrap(errs.KindUsage, err, "manifest %s", arg)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifestBytes+1))
	if err != nil {
		return manifest.Manifest{}, errs.Wrap(errs.KindUsage, err, "manifest %s", arg)
	}
	if len(data) > maxManifestBytes {
		return manifest.Manifest{}, errs.Usage("manifest %s: larger than %d MiB: not a manifest", path, maxManifestBytes>>20)
	}
	m, err := manifest.Parse(data)
	if err != nil {
		return manifest.Manifest{}, errs.Wrap(errs.KindUsage, fmt.Errorf("%w; give a manifest file (%s) or an image ID", err, manifest.GuestPath),
			"manifest %s", path)
	}
	return m, nil
}

// findManifest is the file arg names: arg itself when it is a file, else
// the kept manifest of image arg.
func (inv *invocation) findManifest(arg string, dirs []string) (string, error) {
	if fi, err := os.Stat(arg); err == nil {
		if fi.IsDir() {
			return "", errs.Usage("manifest %s is a directory: give a manifest file or an image ID", arg)
		}
		return arg, nil
	}
	var where []string
	if root, err := config.StateRoot(inv.getenv); err == nil {
		where = append(where, filepath.Join(root, "*", "manifests"))
		if name := config.ManifestFile(filepath.Join(root, "*", "manifests"), arg); name != "" && !strings.ContainsAny(arg, "*?[") {
			if found, _ := filepath.Glob(name); len(found) > 0 {
				return found[0], nil
			}
		}
	}
	for _, d := range dirs {
		where = append(where, d)
		if name := config.ManifestFile(d, arg); name != "" {
			if _, err := os.Stat(name); err == nil {
				return name, nil
			} else if !errors.Is(err, fs.ErrNotExist) {
				return "", errs.Wrap(errs.KindUsage, err, "manifest of image %s", arg)
			}
		}
	}
	return "", errs.New(errs.KindNotFound, "manifest %s: no such file, nor a manifest of an image with that ID kept in %s: "+
		"give a manifest file, or the ID of an image built on this host (--manifests-dir adds a directory)", arg, strings.Join(where, ", "))
}
