package testenv

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

// RemoveBuildLeftovers deletes, in every project, what init and successful
// builds of prefix leave by design: its keypair, its security group, its
// base images and the images named in published. Anything else stays for
// Prefix's leak check to report.
func RemoveBuildLeftovers(tb testing.TB, prefix string, published []string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	leaks, err := FindLeaks(ctx, prefix)
	if err != nil {
		tb.Errorf("listing: %v", err)
		return
	}
	var expected []Leak
	for _, l := range leaks {
		switch {
		case l.Kind == "keypair" && l.Name == config.KeypairName(prefix),
			l.Kind == "security group" && l.Name == config.SecurityGroupName(prefix),
			l.Kind == "image" && strings.HasPrefix(l.Name, prefix+"-image-builder-base-"),
			l.Kind == "image" && slices.Contains(published, l.Name):
			expected = append(expected, l)
		}
	}
	if err := DeleteLeaks(ctx, expected); err != nil {
		tb.Errorf("removing: %v", err)
	}
}
