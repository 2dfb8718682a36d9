package baseimage

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/atomicfile"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/statedir"
)

// Rollback protection. The signature covers SHA256SUMS, not the serial it
// belongs to, so a mirror could serve an older signed pair as "current".
// With Fetcher.StateDir set, the fetcher learns the serial of "current" from
// the mirror's unpacked/build-info.txt, records the newest serial accepted
// per base and arch (and the digest accepted with it) in StateDir, and
// refuses an older serial, or the same serial with another digest, unless
// Spec.Serial pins a serial.

// BuildInfoPath is where, under a serial's directory, the mirror says which
// serial it is (a "serial=20251113" line).
const BuildInfoPath = "unpacked/build-info.txt"

// recordLockTimeout bounds the wait for another fetch's update of the
// serial record (a read and a small write).
const recordLockTimeout = time.Minute

// acceptedSerial is the record of the newest serial accepted for one base
// and arch.
type acceptedSerial struct {
	Serial string `json:"serial"`
	SHA256 string `json:"sha256"`
}

// SerialRecordPath is the file in stateDir that records the newest serial
// accepted for s's base and arch.
func SerialRecordPath(stateDir string, s Spec) string {
	return filepath.Join(stateDir, fmt.Sprintf("base-image-serial-%s-%s.json", s.Base, s.Arch))
}

// ParseBuildInfo returns the serial a build-info.txt names: the value of its
// one "serial=" line, a dated serial such as 20251113 or 20251113.1.
func ParseBuildInfo(data []byte) (string, error) {
	if len(data) > maxSumsSize {
		return "", fmt.Errorf("build-info.txt is %d bytes, more than the %d allowed", len(data), maxSumsSize)
	}
	serial := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxSumsSize)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "serial=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if serial != "" && v != serial {
			return "", fmt.Errorf("build-info.txt names two serials, %q and %q", serial, v)
		}
		serial = v
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading build-info.txt: %w", err)
	}
	if serial == "" {
		return "", errors.New("build-info.txt has no serial= line")
	}
	if _, ok := parseSerial(serial); !ok {
		return "", fmt.Errorf("build-info.txt names serial %q, not a dated serial such as 20251113", serial)
	}
	return serial, nil
}

// parseSerial splits a dated serial into its date and respin number (-1 when
// it has none, so that 20251113 < 20251113.0 < 20251113.1).
func parseSerial(s string) ([2]int, bool) {
	if s == SerialCurrent || !serialRE.MatchString(s) {
		return [2]int{}, false
	}
	date, respin, hasRespin := strings.Cut(s, ".")
	d, err := strconv.Atoi(date)
	if err != nil {
		return [2]int{}, false
	}
	r := -1
	if hasRespin {
		if r, err = strconv.Atoi(respin); err != nil {
			return [2]int{}, false
		}
	}
	return [2]int{d, r}, true
}

// CompareSerials orders two dated serials (as cmp.Compare); ok is false
// when either is not one.
func CompareSerials(a, b string) (c int, ok bool) {
	pa, oka := parseSerial(a)
	pb, okb := parseSerial(b)
	if !oka || !okb {
		return 0, false
	}
	return cmp.Or(cmp.Compare(pa[0], pb[0]), cmp.Compare(pa[1], pb[1])), true
}

// currentSerial asks the mirror which serial dirURL (a "current"
// directory) is.
func (f *Fetcher) currentSerial(ctx context.Context, mirror, dirURL string) (string, error) {
	data, err := f.getSmall(ctx, dirURL+BuildInfoPath, mirror)
	if err != nil {
		return "", fmt.Errorf("cannot tell which serial %s is (pin one with --base-image-serial): %w", dirURL, err)
	}
	serial, err := ParseBuildInfo(data)
	if err != nil {
		return "", errs.Wrap(errs.KindBuild, err, "cannot tell which serial %s is from %s (pin one with --base-image-serial)", dirURL, dirURL+BuildInfoPath)
	}
	return serial, nil
}

// readSerial reads the record for s; ok is false when there is none.
func (f *Fetcher) readSerial(s Spec) (rec acceptedSerial, ok bool, err error) {
	path := SerialRecordPath(f.StateDir, s)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return acceptedSerial{}, false, nil
	}
	if err == nil {
		err = json.Unmarshal(data, &rec)
	}
	if err == nil {
		if _, valid := parseSerial(rec.Serial); !valid || !isHexDigest(rec.SHA256) {
			err = fmt.Errorf("serial %q, sha256 %q", rec.Serial, rec.SHA256)
		}
	}
	if err != nil {
		return acceptedSerial{}, false, errs.Wrap(errs.KindBuild, err,
			"the record of the newest accepted base image serial %s is damaged; remove it to trust the mirror's current serial again", path)
	}
	return rec, true, nil
}

// checkSerial refuses, for an unpinned s, a serial older than the newest
// accepted one, and the newest accepted serial with another digest.
func (f *Fetcher) checkSerial(s Spec, dirURL, seen, sha string) error {
	if f.StateDir == "" || s.serial() != SerialCurrent {
		return nil
	}
	// A serial dated after tomorrow (UTC, a day's slack for time zones)
	// is a mirror's mistake or a forged build-info.txt: recorded, it would
	// refuse every real serial after it.
	now := time.Now
	if f.Now != nil {
		now = f.Now
	}
	if p, ok := parseSerial(seen); ok {
		tomorrow, _ := strconv.Atoi(now().UTC().AddDate(0, 0, 1).Format("20060102"))
		if p[0] > tomorrow {
			return errs.New(errs.KindBuild, "base image %s %s: %s says it is serial %s, dated after tomorrow; "+
				"refusing it (recorded, it would refuse every real serial after it): pass --base-image-serial to pin one", s.Base, s.Arch, dirURL, seen)
		}
	}
	rec, ok, err := f.readSerial(s)
	if err != nil || !ok {
		return err
	}
	c, _ := CompareSerials(seen, rec.Serial)
	switch {
	case c < 0:
		return errs.New(errs.KindBuild, "base image %s %s: %s is serial %s, older than %s, the newest accepted on this host (recorded in %s; a rolled-back mirror?); "+
			"refusing it: pass --base-image-serial %s to use it anyway", s.Base, s.Arch, dirURL, seen, rec.Serial, SerialRecordPath(f.StateDir, s), seen)
	case c == 0 && rec.SHA256 != sha:
		return errs.New(errs.KindBuild, "base image %s %s: %s is serial %s with sha256 %s, but serial %s was accepted with sha256 %s; "+
			"refusing it: pass --base-image-serial %s to use it anyway", s.Base, s.Arch, dirURL, seen, sha, rec.Serial, rec.SHA256, seen)
	}
	return nil
}

// recordSerial records seen as the newest accepted serial of s's base and
// arch, unless a newer one is recorded already. The file is replaced
// atomically, and the read, compare and write happen under a lock beside
// it, so that two fetches at once cannot move the record back.
func (f *Fetcher) recordSerial(ctx context.Context, s Spec, seen, sha string) error {
	if f.StateDir == "" {
		return nil
	}
	if _, ok := parseSerial(seen); !ok {
		return nil
	}
	lctx, cancel := context.WithTimeout(ctx, recordLockTimeout)
	defer cancel()
	unlock, err := statedir.Lock(lctx, SerialRecordPath(f.StateDir, s)+".lock")
	if err != nil {
		return fmt.Errorf("recording the base image serial: %w", err)
	}
	defer unlock()
	rec, ok, err := f.readSerial(s)
	if err != nil && s.serial() == SerialCurrent {
		return err
	}
	if err == nil && ok {
		if c, _ := CompareSerials(seen, rec.Serial); c <= 0 {
			return nil
		}
	}
	if err := os.MkdirAll(f.StateDir, 0o700); err != nil {
		return fmt.Errorf("recording the base image serial: %w", err)
	}
	data, err := json.Marshal(acceptedSerial{Serial: seen, SHA256: sha})
	if err != nil {
		return err
	}
	if err := atomicfile.Write(SerialRecordPath(f.StateDir, s), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("recording the base image serial: %w", err)
	}
	f.log().Info("base image serial recorded", "base", string(s.Base), "arch", string(s.Arch), "serial", seen, "sha256", sha)
	return nil
}
