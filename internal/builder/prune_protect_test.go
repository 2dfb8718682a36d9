package builder

import (
	"slices"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
)

// Images the builder host handed to its consumers (RunSpec.Protect) are
// never pruned, and count as kept.
func TestPruneVictimsProtect(t *testing.T) {
	images := []openstack.Image{img("a", 1), img("handed", 2), img("b", 3), img("new", 4)}
	tests := []struct {
		policy PrunePolicy
		want   []string
	}{
		{PrunePolicy{Keep: 1, JustPublished: "new"}, []string{"a", "handed", "b"}},
		{PrunePolicy{Keep: 1, JustPublished: "new", Protect: []string{"handed"}}, []string{"a", "b"}},
		{PrunePolicy{Keep: 2, JustPublished: "new", Protect: []string{"handed"}}, []string{"a"}},
		{PrunePolicy{Keep: 3, JustPublished: "new", Protect: []string{"handed", "a"}}, nil},
	}
	for _, tt := range tests {
		tt.policy.Name, tt.policy.Owner = "n", "me"
		var got []string
		for _, v := range PruneVictims(images, tt.policy) {
			got = append(got, v.ID)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%+v: victims %q, want %q", tt.policy, got, tt.want)
		}
	}
}
