package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
)

// SuccessHeader starts `run`'s final stdout, as the Python tool prints it;
// the charm parses the last word after it.
const SuccessHeader = "Image build success:\n"

// LocalFileHeader starts the line of a local build's stdout that names the
// image file it wrote.
const LocalFileHeader = "Image file: "

// WriteRunResult prints a successful run's images. clouds is
// RunSpec.PublishClouds(): the images are printed in that order, and each
// cloud must have exactly one (a mismatch is a bug, never a silent
// truncation as the charm's zip would do). output is the absolute path of
// a local build's image file, "" for the openstack builder.
//
// Text is "Image build success:\n<id>[,<id>...]" with no trailing newline,
// the Python tool's output. A local build's first line is
// "Image file: <output>", and with no images (nothing uploaded) output
// itself follows the header: the last word is always the result, which
// is what the charm's parser reads. JSON is
// {"output"?, "manifest_sha256"?, "images":[{"cloud","id","name","checksum","manifest_sha256"?}...]}.
func WriteRunResult(w io.Writer, f Format, clouds []string, imgs []config.PublishedImage, output string) error {
	ordered, err := orderImages(clouds, imgs)
	if err != nil {
		return err
	}
	switch f {
	case FormatJSON:
		return writeJSON(w, struct {
			Output         string                  `json:"output,omitempty"`
			ManifestSHA256 string                  `json:"manifest_sha256,omitempty"`
			Images         []config.PublishedImage `json:"images"`
		}{output, runManifestSHA256(ordered, output), ordered})
	case FormatText:
		ids := make([]string, len(ordered))
		for i, img := range ordered {
			ids[i] = img.ID
		}
		result := strings.Join(ids, ",")
		var file string
		if output != "" {
			file = LocalFileHeader + output + "\n"
			if result == "" {
				result = output
			}
		}
		_, err := io.WriteString(w, file+SuccessHeader+result)
		return wrapWrite(err)
	default:
		return errs.New(errs.KindInternal, "unknown output format %q", f)
	}
}

// runManifestSHA256 is the SHA-256 of the build's manifest: the images'
// (all the same), else that of the file a local build wrote beside output;
// "" when the build collected none.
func runManifestSHA256(imgs []config.PublishedImage, output string) string {
	for _, img := range imgs {
		if img.ManifestSHA256 != "" {
			return img.ManifestSHA256
		}
	}
	if output == "" {
		return ""
	}
	data, err := os.ReadFile(builder.ManifestBeside(output))
	if err != nil {
		return ""
	}
	return manifest.SHA256(data)
}

func orderImages(clouds []string, imgs []config.PublishedImage) ([]config.PublishedImage, error) {
	if len(imgs) != len(clouds) {
		return nil, errs.New(errs.KindInternal, "the build reported %d images for %d clouds (%s)", len(imgs), len(clouds), strings.Join(clouds, ","))
	}
	out := make([]config.PublishedImage, 0, len(clouds))
	for _, c := range clouds {
		found := -1
		for i, img := range imgs {
			if img.Cloud != c {
				continue
			}
			if found >= 0 {
				return nil, errs.New(errs.KindInternal, "the build reported two images for cloud %q", c)
			}
			found = i
		}
		if found < 0 {
			return nil, errs.New(errs.KindInternal, "the build reported no image for cloud %q", c)
		}
		if imgs[found].ID == "" || strings.ContainsAny(imgs[found].ID, ", \n") {
			return nil, errs.New(errs.KindInternal, "the build reported an unusable image ID %q for cloud %q", imgs[found].ID, c)
		}
		out = append(out, imgs[found])
	}
	return out, nil
}

// WriteLatest prints latest-build-id's answer: the bare ID with no newline
// (nothing when there is none), or {"id": "..."} in JSON.
func WriteLatest(w io.Writer, f Format, q config.LatestQuery, id string) error {
	if f == FormatJSON {
		return writeJSON(w, struct {
			Cloud string `json:"cloud"`
			Name  string `json:"name"`
			ID    string `json:"id"`
		}{q.Cloud, q.ImageName, id})
	}
	_, err := io.WriteString(w, id)
	return wrapWrite(err)
}

// WriteSwept prints what sweep removed: one "kind name id" line each, or JSON.
func WriteSwept(w io.Writer, f Format, dryRun bool, swept []config.SweptResource) error {
	if f == FormatJSON {
		if swept == nil {
			swept = []config.SweptResource{}
		}
		return writeJSON(w, struct {
			DryRun  bool                   `json:"dry_run"`
			Removed []config.SweptResource `json:"removed"`
		}{dryRun, swept})
	}
	verb := "removed"
	if dryRun {
		verb = "would remove"
	}
	var b strings.Builder
	for _, r := range swept {
		fmt.Fprintf(&b, "%s %s %s %s\n", verb, r.Kind, r.Name, r.ID)
	}
	_, err := io.WriteString(w, b.String())
	return wrapWrite(err)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return wrapWrite(enc.Encode(v))
}

func wrapWrite(err error) error {
	if err != nil {
		return fmt.Errorf("writing to stdout: %w", err)
	}
	return nil
}
