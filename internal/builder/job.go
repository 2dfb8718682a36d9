package builder

import (
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/provision"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
)

// Job is one build as the builders take it: a validated request and what
// was read for it once, before anything boots (internal/build prepares it).
type Job struct {
	Spec config.RunSpec
	// Runner is the release the recipe installs (zero when --user-data
	// replaced the recipe and no version was pinned).
	Runner release.Release
	// UserData is what the guest boots with: the recipe rendered for the
	// proxy address the guest sees, or the --user-data file.
	UserData []byte
	// Script is the --script-url script, fetched on this host (nil: none).
	Script []byte
	// Checks are what the "verify" step runs (ChecksFor).
	Checks provision.Checks
	// Observe receives the build's events: steps, and what it made and
	// removed (a Ledger, metrics, progress); nil ignores them.
	Observe Observer
}
