package release

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

// githubRelease is the part of a GitHub release document that we use.
type githubRelease struct {
	Tag     string // tag_name, e.g. "v2.330.0"
	Version string // Tag without the "v", validated X.Y.Z
	Body    string // release notes (markdown)
	Assets  []githubAsset
}

type githubAsset struct {
	Name   string
	URL    string // browser_download_url
	Digest string // "sha256:HEX" (GitHub sets it on assets since 2025); may be empty
}

func (g githubRelease) asset(name string) (githubAsset, bool) {
	for _, a := range g.Assets {
		if a.Name == name {
			return a, true
		}
	}
	return githubAsset{}, false
}

// parseRelease decodes a GitHub release document (GET .../releases/latest
// or .../releases/tags/TAG) and validates its tag as vX.Y.Z.
func parseRelease(data []byte) (githubRelease, error) {
	var doc struct {
		TagName string  `json:"tag_name"`
		Body    *string `json:"body"`
		Draft   bool    `json:"draft"`
		Assets  []struct {
			Name               string  `json:"name"`
			BrowserDownloadURL string  `json:"browser_download_url"`
			Digest             *string `json:"digest"`
		} `json:"assets"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return githubRelease{}, fmt.Errorf("decoding release JSON: %w", err)
	}
	if doc.Draft {
		return githubRelease{}, fmt.Errorf("release %q is a draft", doc.TagName)
	}
	version, ok := strings.CutPrefix(doc.TagName, "v")
	if !ok || !versionRE.MatchString(version) {
		return githubRelease{}, fmt.Errorf("release tag %q is not of the form vX.Y.Z", doc.TagName)
	}
	g := githubRelease{Tag: doc.TagName, Version: version}
	if doc.Body != nil {
		g.Body = *doc.Body
	}
	for _, a := range doc.Assets {
		ga := githubAsset{Name: a.Name, URL: a.BrowserDownloadURL}
		if a.Digest != nil {
			ga.Digest = *a.Digest
		}
		g.Assets = append(g.Assets, ga)
	}
	return g, nil
}

// SHAFromNotes returns the SHA-256 that release notes state for the linux
// tarball of arch a, between the markers
//
//	<!-- BEGIN SHA linux-<arch> --> and <!-- END SHA linux-<arch> -->
//
// (surrounding whitespace allowed). It never scans the notes for any
// 64-hex string: notes hold other checksums too. The result is lowercase.
func SHAFromNotes(notes string, a config.Arch) (string, error) {
	begin := "<!-- BEGIN SHA linux-" + a.Runner() + " -->"
	end := "<!-- END SHA linux-" + a.Runner() + " -->"
	found := ""
	rest := notes
	for {
		_, afterBegin, ok := strings.Cut(rest, begin)
		if !ok {
			break
		}
		value, afterEnd, ok := strings.Cut(afterBegin, end)
		if !ok {
			return "", fmt.Errorf("release notes have %q without %q", begin, end)
		}
		value = strings.ToLower(strings.TrimSpace(value))
		if !sha256RE.MatchString(value) {
			return "", errors.New("release notes' linux-" + a.Runner() + " checksum is not 64 hex digits")
		}
		if found != "" && found != value {
			return "", errors.New("release notes state two different linux-" + a.Runner() + " checksums")
		}
		found, rest = value, afterEnd
	}
	if found == "" {
		return "", fmt.Errorf("release notes have no %q marker", begin)
	}
	return found, nil
}

// shaFromDigest parses an asset digest "sha256:HEX".
func shaFromDigest(d string) (string, error) {
	if d == "" {
		return "", errors.New("no digest")
	}
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || !sha256RE.MatchString(hex) {
		return "", fmt.Errorf("digest %q is not sha256:<64 hex digits>", d)
	}
	return strings.ToLower(hex), nil
}
