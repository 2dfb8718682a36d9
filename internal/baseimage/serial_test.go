package baseimage

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// publish makes the mirror serve, under dir (e.g. /noble/current/), a signed
// SHA256SUMS of image and a build-info.txt naming serial ("" for none).
func (fx *fixture) publish(t *testing.T, dir, serial string, image []byte) {
	t.Helper()
	sums := fmt.Appendf(nil, "%s *%s\n", hexSHA(image), testImageName)
	fx.mirror.mu.Lock()
	defer fx.mirror.mu.Unlock()
	fx.mirror.files[dir+testImageName] = image
	fx.mirror.files[dir+"SHA256SUMS"] = sums
	fx.mirror.files[dir+"SHA256SUMS.gpg"] = sign(t, fx.key, sums)
	if serial != "" {
		fx.mirror.files[dir+BuildInfoPath] = []byte("serial=" + serial + "\n")
	} else {
		delete(fx.mirror.files, dir+BuildInfoPath)
	}
}

// An older signed pair served as current is refused once a newer serial was
// accepted; a pin lets it through without lowering the record; a newer one
// raises it; the newest serial with another digest is refused too.
func TestFetchRefusesRolledBackSerial(t *testing.T) {
	fx := newFixture(t)
	fx.fetcher.StateDir = t.TempDir()
	fx.fetcher.Now = func() time.Time { return time.Date(2026, 6, 1, 22, 0, 0, 0, time.UTC) }
	ctx := context.Background()
	newImage, oldImage := []byte("image of 20251113"), []byte("image of 20250101")
	fx.publish(t, testDir, "20251113", newImage)
	record := SerialRecordPath(fx.fetcher.StateDir, testSpec)

	steps := []struct {
		name     string
		serve    func()
		spec     Spec
		want     []byte   // the image fetched, nil for a refusal
		contains []string // in the refusal
		record   string   // the serial recorded afterwards
	}{
		{"first fetch records its serial", func() {}, testSpec, newImage, nil, "20251113"},
		{"an older current is refused", func() { fx.publish(t, testDir, "20250101", oldImage) }, testSpec, nil,
			[]string{"serial 20250101", "older than 20251113", "recorded in " + record, "--base-image-serial 20250101"}, "20251113"},
		{"an older respin is refused", func() { fx.publish(t, testDir, "20251112.9", oldImage) }, testSpec, nil,
			[]string{"20251112.9", "20251113"}, "20251113"},
		{"pinning the older serial lets it through", func() { fx.publish(t, "/noble/20250101/", "", oldImage) },
			Spec{Base: config.BaseNoble, Arch: config.ArchX64, Serial: "20250101"}, oldImage, nil, "20251113"},
		{"the same serial with another digest is refused", func() { fx.publish(t, testDir, "20251113", oldImage) }, testSpec, nil,
			[]string{"serial 20251113 with sha256 " + hexSHA(oldImage), "accepted with sha256 " + hexSHA(newImage), "--base-image-serial 20251113"}, "20251113"},
		{"a respin of the newest is newer", func() { fx.publish(t, testDir, "20251113.1", oldImage) }, testSpec, oldImage, nil, "20251113.1"},
		{"a current without build-info is refused", func() { fx.publish(t, testDir, "", newImage) }, testSpec, nil,
			[]string{"cannot tell which serial", BuildInfoPath, "--base-image-serial"}, "20251113.1"},
		{"a newer current is accepted", func() { fx.publish(t, testDir, "20260101", newImage) }, testSpec, newImage, nil, "20260101"},
		{"a serial dated after tomorrow is refused", func() { fx.publish(t, testDir, "20260603", newImage) }, testSpec, nil,
			[]string{"serial 20260603, dated after tomorrow", "--base-image-serial"}, "20260101"},
		{"tomorrow's is accepted", func() { fx.publish(t, testDir, "20260602", newImage) }, testSpec, newImage, nil, "20260602"},
	}
	for _, st := range steps {
		st.serve()
		img, err := fx.fetcher.Fetch(ctx, st.spec)
		switch {
		case st.want == nil && err == nil:
			t.Errorf("%s: fetched %s, want a refusal", st.name, img.Path)
		case st.want == nil && (errs.KindOf(err) != errs.KindBuild && errs.KindOf(err) != errs.KindNotFound):
			t.Errorf("%s: error %v is of kind %v", st.name, err, errs.KindOf(err))
		case st.want != nil && err != nil:
			t.Errorf("%s: %v", st.name, err)
		case st.want != nil:
			if got, rerr := os.ReadFile(img.Path); rerr != nil || !bytes.Equal(got, st.want) {
				t.Errorf("%s: fetched %q (%v), want %q", st.name, got, rerr, st.want)
			}
			// The image names the serial it is of (the manifest records it).
			if want := cmp.Or(st.spec.Serial, st.record); img.Serial != want {
				t.Errorf("%s: image of serial %q, want %q", st.name, img.Serial, want)
			}
		}
		for _, c := range st.contains {
			if err == nil || !strings.Contains(err.Error(), c) {
				t.Errorf("%s: error %v does not contain %q", st.name, err, c)
			}
		}
		rec, ok, rerr := fx.fetcher.readSerial(testSpec)
		if rerr != nil || !ok || rec.Serial != st.record {
			t.Errorf("%s: recorded %+v (%v, %v), want serial %s", st.name, rec, ok, rerr, st.record)
		}
	}
	if fi, err := os.Stat(record); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("record %s: %v, mode %v; want 0600", record, err, fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(fx.fetcher.StateDir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{filepath.Base(record), filepath.Base(record) + ".lock"}; !slices.Equal(names, want) {
		t.Errorf("state dir holds %q, want only the record and its lock %q (no temporary file)", names, want)
	}

	// A damaged record fails closed.
	if err := os.WriteFile(record, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.fetcher.Fetch(ctx, testSpec); err == nil || !strings.Contains(err.Error(), record) {
		t.Errorf("with a damaged record: %v, want an error naming %s", err, record)
	}
}

func TestCompareSerials(t *testing.T) {
	tests := []struct {
		a, b string
		want int
		ok   bool
	}{
		{"20251113", "20251113", 0, true},
		{"20251112", "20251113", -1, true},
		{"20260101", "20251231", 1, true},
		{"20251113.1", "20251113", 1, true},
		{"20251113", "20251113.0", -1, true},
		{"20251113.10", "20251113.9", 1, true},
		{"20251114", "20251113.99", 1, true},
		{"current", "20251113", 0, false},
		{"2025111", "20251113", 0, false},
		{"20251113", "", 0, false},
	}
	for _, tt := range tests {
		got, ok := CompareSerials(tt.a, tt.b)
		if got != tt.want || ok != tt.ok {
			t.Errorf("CompareSerials(%q, %q) = %d, %v; want %d, %v", tt.a, tt.b, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseBuildInfo(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"serial=20251113\n", "20251113", true},
		{"build_name=server\nserial=20251113.1\n", "20251113.1", true},
		{"serial=20251113\r\nserial=20251113\n", "20251113", true},
		{"serial=20251113\nserial=20250101\n", "", false},
		{"build_name=server\n", "", false},
		{"serial=current\n", "", false},
		{"serial=../../etc\n", "", false},
		{" serial=20251113\n", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, err := ParseBuildInfo([]byte(tt.in))
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("ParseBuildInfo(%q) = %q, %v; want %q, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// FuzzParseBuildInfo: a serial ParseBuildInfo accepts is a dated serial that
// the input names on a "serial=" line, and every such line names it.
func FuzzParseBuildInfo(f *testing.F) {
	for _, s := range []string{"serial=20251113\n", "build_name=server\nserial=20251113.1\n", "serial=1\n", "serial=20251113\nserial=20250101"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseBuildInfo(data)
		if err != nil {
			return
		}
		if _, ok := parseSerial(got); !ok {
			t.Fatalf("accepted %q, not a dated serial", got)
		}
		named := false
		for _, line := range strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n") {
			if v, ok := strings.CutPrefix(line, "serial="); ok {
				if strings.TrimSpace(v) != got {
					t.Fatalf("accepted %q, but a line names %q", got, v)
				}
				named = true
			}
		}
		if !named {
			t.Fatalf("accepted %q, which no serial= line names", got)
		}
	})
}

// Fetches recording serials at once never move the record back: the
// newest serial of all is what stays.
func TestRecordSerialConcurrent(t *testing.T) {
	f := &Fetcher{StateDir: t.TempDir()}
	const n = 24
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			serial := fmt.Sprintf("202501%02d", (i*7)%n+1) // every day once, out of order
			if err := f.recordSerial(context.Background(), testSpec, serial, strings.Repeat("a", 64)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	rec, ok, err := f.readSerial(testSpec)
	if want := fmt.Sprintf("202501%02d", n); err != nil || !ok || rec.Serial != want {
		t.Errorf("record %+v (%v, %v), want serial %s", rec, ok, err, want)
	}
}
