package cli

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
)

// A local build's stdout names the image file; the last word stays the
// result the charm's parser (stdout.split()[-1].split(",")) reads: the
// IDs when it uploaded, else the file.
func TestWriteRunResultLocal(t *testing.T) {
	imgs := []config.PublishedImage{{Cloud: "west", ID: "id-w", Name: "img"}, {Cloud: "east", ID: "id-e", Name: "img"}}
	tests := []struct {
		name      string
		format    Format
		clouds    []string
		imgs      []config.PublishedImage
		want      string
		wantParse []string
	}{
		{"no upload", FormatText, nil, nil, "Image file: /o/img.qcow2\nImage build success:\n/o/img.qcow2", []string{"/o/img.qcow2"}},
		{"uploaded", FormatText, []string{"east", "west"}, imgs, "Image file: /o/img.qcow2\nImage build success:\nid-e,id-w", []string{"id-e", "id-w"}},
		{"json no upload", FormatJSON, nil, nil, "{\n  \"output\": \"/o/img.qcow2\",\n  \"images\": []\n}\n", nil},
		{"json uploaded", FormatJSON, []string{"east"}, imgs[1:], "{\n  \"output\": \"/o/img.qcow2\",\n  \"images\": [\n    {\n      \"cloud\": \"east\",\n      \"id\": \"id-e\",\n      \"name\": \"img\",\n      \"checksum\": \"\"\n    }\n  ]\n}\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteRunResult(&b, tt.format, tt.clouds, tt.imgs, "/o/img.qcow2"); err != nil || b.String() != tt.want {
				t.Fatalf("got %q, %v; want %q", b.String(), err, tt.want)
			}
			if tt.wantParse != nil {
				f := strings.Fields(b.String())
				if got := strings.Split(f[len(f)-1], ","); !slices.Equal(got, tt.wantParse) {
					t.Errorf("the charm's parser reads %q, want %q", got, tt.wantParse)
				}
			}
		})
	}
}

// `run --builder local` prints the absolute --output (relative on the
// command line) and, with --upload-clouds, the IDs last.
func TestRunLocalPrintsTheFile(t *testing.T) {
	backend := Backend{Builds: fakeBuilds(func(_ context.Context, _ *slog.Logger, spec config.RunSpec, _ release.Release, _ []byte) ([]config.PublishedImage, error) {
		var imgs []config.PublishedImage
		for i, c := range spec.UploadClouds {
			imgs = append(imgs, config.PublishedImage{Cloud: c, ID: "id" + string(rune('1'+i))})
		}
		return imgs, nil
	})}
	abs, err := filepath.Abs("out/img.qcow2")
	if err != nil {
		t.Fatal(err)
	}
	base := pinned("--os-cloud", "c", "run", "img", "--arch", "x64", "--builder", "local", "--output", "out/img.qcow2")
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no upload", base, "Image file: " + abs + "\nImage build success:\n" + abs},
		{"uploaded", append(base, "--upload-clouds", "a,b"), "Image file: " + abs + "\nImage build success:\nid1,id2"},
	} {
		if r := runApp(t, testEnv(), backend, tt.args...); r.code != 0 || r.stdout != tt.want {
			t.Errorf("%s: exit %d, stdout %q, want %q (stderr %s)", tt.name, r.code, r.stdout, tt.want, r.stderr)
		}
	}
	// The openstack builder's output is the Python tool's, unchanged.
	if r := runApp(t, testEnv(), backend, pinned("--os-cloud", "c", "run", "img", "--arch", "x64", "--upload-clouds", "a")...); r.stdout != "Image build success:\nid1" {
		t.Errorf("openstack: stdout %q", r.stdout)
	}
}

// A failed build that kept its builder (--keep-on-failure) prints how to
// reach and remove it before the Error line; the exit code is the failure's.
func TestRunPrintsTheKeptBuilder(t *testing.T) {
	backend := Backend{Builds: fakeBuilds(func(context.Context, *slog.Logger, config.RunSpec, release.Release, []byte) ([]config.PublishedImage, error) {
		return nil, &config.KeptBuilder{Err: errs.New(errs.KindVerify, "verification failed: no"), Cloud: "build", Prefix: "p",
			Server: "s-1", Name: "p-image-builder-noble-x64", Addr: "127.0.0.9:22", User: "ubuntu", KeyFile: "/k", KnownHosts: "/kh"}
	})}
	r := runApp(t, testEnv(), backend, pinned("--os-cloud", "build", "run", "img", "--arch", "x64", "--keep-on-failure")...)
	want := "The builder server p-image-builder-noble-x64 (s-1) in cloud build is left running for debugging (--keep-on-failure).\n" +
		"  Reach it:  ssh -i /k -o IdentitiesOnly=yes -o UserKnownHostsFile=/kh -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null -p 22 ubuntu@127.0.0.9\n" +
		"  Remove it: github-runner-image-builder --os-cloud build sweep --prefix p --server s-1\n" +
		"Error: verification failed: no\n"
	if r.code != 7 || r.stdout != "" || !strings.HasSuffix(r.stderr, want) {
		t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant the suffix:\n%s", r.code, r.stdout, r.stderr, want)
	}
}

// `--format json` carries the manifest's SHA-256: the images', or that of
// the file a local build wrote beside --output.
func TestWriteRunResultManifest(t *testing.T) {
	out := filepath.Join(t.TempDir(), "img.qcow2")
	data := []byte("{\"schema\": 1}\n")
	if err := os.WriteFile(builder.ManifestBeside(out), data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := manifest.SHA256(data)
	withSum := []config.PublishedImage{{Cloud: "east", ID: "id-e", Name: "img", ManifestSHA256: "abc", Manifest: data}}
	for _, tt := range []struct {
		name   string
		output string
		clouds []string
		imgs   []config.PublishedImage
		want   string
	}{
		{"local, beside the output", out, nil, nil, "{\n  \"output\": \"" + out + "\",\n  \"manifest_sha256\": \"" + sum + "\",\n  \"images\": []\n}\n"},
		{"images", "", []string{"east"}, withSum, "{\n  \"manifest_sha256\": \"abc\",\n  \"images\": [\n    {\n      \"cloud\": \"east\",\n      \"id\": \"id-e\",\n" +
			"      \"name\": \"img\",\n      \"checksum\": \"\",\n      \"manifest_sha256\": \"abc\"\n    }\n  ]\n}\n"},
		{"none", filepath.Join(filepath.Dir(out), "other.qcow2"), nil, nil, "{\n  \"output\": \"" + filepath.Join(filepath.Dir(out), "other.qcow2") + "\",\n  \"images\": []\n}\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteRunResult(&b, FormatJSON, tt.clouds, tt.imgs, tt.output); err != nil || b.String() != tt.want {
				t.Fatalf("got %q, %v; want %q", b.String(), err, tt.want)
			}
		})
	}
}
