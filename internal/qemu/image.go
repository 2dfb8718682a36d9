package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// imageInfo is what qemu-img info reports about an image file.
type imageInfo struct {
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
	BackingFile string `json:"backing-filename"`
}

// inspectImage runs qemu-img info on path. The format is probed, so only
// formats a base image may have are accepted (qcow2, raw), and an image
// with a backing file is refused: it would make qemu read another host file.
func inspectImage(ctx context.Context, env []string, qemuImg, path string) (imageInfo, error) {
	out, err := runTool(ctx, env, qemuImg, "info", "--output=json", "--", path)
	if err != nil {
		return imageInfo{}, errs.Wrap(errs.KindUsage, err, "base image %s is not a readable disk image", path)
	}
	var info imageInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return imageInfo{}, fmt.Errorf("qemu-img info %s: %w", path, err)
	}
	switch {
	case info.Format != "qcow2" && info.Format != "raw":
		return imageInfo{}, errs.Usage("base image %s is %q; the local builder boots qcow2 or raw images", path, info.Format)
	case info.BackingFile != "":
		return imageInfo{}, errs.Usage("base image %s has a backing file (%s); flatten it first (qemu-img convert -O qcow2)", path, info.BackingFile)
	case info.VirtualSize <= 0:
		return imageInfo{}, fmt.Errorf("qemu-img info %s: no virtual size", path)
	}
	return info, nil
}

// overlayArgs is the qemu-img command line of a copy-on-write overlay over
// base (of format baseFormat), of virtual size size bytes. Its clusters are
// the guest file system's 4 KiB blocks: qcow2 ignores a discard of less than
// a cluster, so with the default 64 KiB clusters the guest's fstrim left
// freed blocks that shared a cluster with live data (the build's private host
// key among them, in cloud-init's rewritten files) in the exported image.
func overlayArgs(base, baseFormat, overlay string, size int64) []string {
	return []string{"create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", base, "-F", baseFormat, overlay, strconv.FormatInt(size, 10)}
}

// exportArgs is the qemu-img command line that flattens src (with its whole
// backing chain) into one compressed qcow2 at dst, printing progress.
func exportArgs(src, dst string) []string {
	return []string{"convert", "-p", "-c", "-f", "qcow2", "-O", "qcow2", "--", src, dst}
}

// convertProgress reports qemu-img -p's percentages, e.g. "    (42.17/100%)".
var progressRE = regexp.MustCompile(`\((\d+(?:\.\d+)?)/100%\)`)

// convert runs qemu-img with args and the whole environment env, calling
// progress (if not nil) with each percentage it prints.
func convert(ctx context.Context, env []string, qemuImg string, args []string, progress func(pct float64)) error {
	cmd := exec.CommandContext(ctx, qemuImg, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 10 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting qemu-img: %w", err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Split(splitCR)
	for sc.Scan() {
		if m := progressRE.FindStringSubmatch(sc.Text()); m != nil && progress != nil {
			if pct, err := strconv.ParseFloat(m[1], 64); err == nil {
				progress(pct)
			}
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("qemu-img %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// splitCR splits on '\r' or '\n' (qemu-img rewrites its progress line with '\r').
func splitCR(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// runTool runs a short host command with the whole environment env and
// returns its stdout.
func runTool(ctx context.Context, env []string, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return nil, fmt.Errorf("%s %s: %w", filepath.Base(bin), args[0], err)
		}
		return nil, fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), args[0], err, msg)
	}
	return stdout.Bytes(), nil
}

// publishFile makes tmp (a finished file in the same directory) appear
// atomically at path: synced, mode 0644, renamed, directory synced.
func publishFile(tmp, path string) error {
	f, err := os.OpenFile(tmp, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return nil // renamed; a directory we cannot open cannot be synced either
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// ConvertImage writes src (of format srcFormat) to dst as dstFormat (raw
// or qcow2) with qemu-img (qemuImg, "" for the one on PATH), its
// environment config.ChildEnv(getenv). dst must not exist.
func ConvertImage(ctx context.Context, getenv func(string) string, qemuImg, src, srcFormat, dst, dstFormat string) error {
	if qemuImg == "" {
		qemuImg = "qemu-img"
	}
	args := []string{"convert", "-f", srcFormat, "-O", dstFormat, "--", src, dst}
	if err := convert(ctx, config.ChildEnv(getenv), qemuImg, args, nil); err != nil {
		return fmt.Errorf("converting %s to %s: %w", src, dstFormat, err)
	}
	return nil
}
