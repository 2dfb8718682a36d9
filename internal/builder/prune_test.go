package builder

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// img builds a test image: minutes after a fixed time, status, owner and marks.
func img(id string, minute int, opts ...func(*openstack.Image)) openstack.Image {
	im := openstack.Image{ID: id, Name: "n", Status: openstack.ImageActive, Owner: "me",
		CreatedAt: time.Date(2026, 1, 1, 0, minute, 0, 0, time.UTC), Properties: map[string]string{PropPublished: "true", PropBuildID: id}}
	for _, o := range opts {
		o(&im)
	}
	return im
}

var (
	unmarkedImg = func(im *openstack.Image) { im.Properties = map[string]string{} }
	building    = func(im *openstack.Image) { delete(im.Properties, PropPublished) }
	saving      = func(im *openstack.Image) { im.Status = openstack.ImageSaving }
	foreign     = func(im *openstack.Image) { im.Owner = "other" }
	otherName   = func(im *openstack.Image) { im.Name = "m" }
)

func TestPruneVictims(t *testing.T) {
	tests := []struct {
		name   string
		images []openstack.Image
		policy PrunePolicy
		want   []string // oldest first
	}{
		{"keep 2 of 4", []openstack.Image{img("a", 1), img("b", 2), img("c", 3), img("new", 4)},
			PrunePolicy{Keep: 2, JustPublished: "new"}, []string{"a", "b"}},
		{"keep 1", []openstack.Image{img("a", 1), img("b", 2), img("new", 3)},
			PrunePolicy{Keep: 1, JustPublished: "new"}, []string{"a", "b"}},
		{"never the just-published, even when not the newest", []openstack.Image{img("a", 1), img("new", 2), img("later", 3)},
			PrunePolicy{Keep: 1, JustPublished: "new"}, []string{"a"}},
		{"never the newest of any kind", []openstack.Image{img("a", 1), img("new", 2), img("inflight", 3, building)},
			PrunePolicy{Keep: 1, JustPublished: "new"}, []string{"a"}},
		{"unmarked untouched and not counted", []openstack.Image{img("py1", 1, unmarkedImg), img("a", 2), img("py2", 3, unmarkedImg), img("new", 4)},
			PrunePolicy{Keep: 2, JustPublished: "new"}, nil},
		{"adopted unmarked counted and pruned", []openstack.Image{img("py1", 1, unmarkedImg), img("a", 2), img("py2", 3, unmarkedImg), img("new", 4)},
			PrunePolicy{Keep: 2, JustPublished: "new", AdoptUnmarked: true}, []string{"py1", "a"}},
		{"another run's image in progress is not unmarked", []openstack.Image{img("x", 1, building), img("a", 2), img("new", 3)},
			PrunePolicy{Keep: 1, JustPublished: "new", AdoptUnmarked: true}, []string{"a"}},
		{"only active", []openstack.Image{img("a", 1, saving), img("b", 2), img("new", 3)},
			PrunePolicy{Keep: 1, JustPublished: "new"}, []string{"b"}},
		{"only our project", []openstack.Image{img("a", 1, foreign), img("b", 2), img("new", 3)},
			PrunePolicy{Keep: 1, JustPublished: "new"}, []string{"b"}},
		{"only that name", []openstack.Image{img("a", 1, otherName), img("b", 2), img("new", 3)},
			PrunePolicy{Keep: 1, JustPublished: "new"}, []string{"b"}},
		{"ties ordered by ID", []openstack.Image{img("b", 1), img("a", 1), img("new", 2)},
			PrunePolicy{Keep: 2, JustPublished: "new"}, []string{"b"}},
		{"keep 0 deletes nothing", []openstack.Image{img("a", 1), img("new", 2)},
			PrunePolicy{Keep: 0, JustPublished: "new"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.policy
			p.Name, p.Owner = "n", "me"
			images := slices.Clone(tt.images)
			slices.Reverse(images) // the input order must not matter
			var got []string
			for _, v := range PruneVictims(images, p) {
				got = append(got, v.ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("victims %v, want %v", got, tt.want)
			}
		})
	}
}

// Two runs of one name pruning with keep 2, each having seen a different
// state of the list, never leave fewer than 2 between them.
func TestPruneOverlappingRuns(t *testing.T) {
	base := []openstack.Image{img("a", 1), img("b", 2), img("c", 3)}
	runA := append(slices.Clone(base), img("A", 4))
	runB := append(slices.Clone(runA), img("B", 5))
	deleted := map[string]bool{}
	for _, v := range PruneVictims(runA, PrunePolicy{Name: "n", Owner: "me", Keep: 2, JustPublished: "A"}) {
		deleted[v.ID] = true
	}
	for _, v := range PruneVictims(runB, PrunePolicy{Name: "n", Owner: "me", Keep: 2, JustPublished: "B"}) {
		deleted[v.ID] = true
	}
	if deleted["A"] || deleted["B"] {
		t.Errorf("a just-published image was pruned: %v", deleted)
	}
}

func TestPruneDeletesOldestFirstAndReportsFailures(t *testing.T) {
	c := newFakeCloud("c")
	var ids []string
	for range 4 {
		ids = append(ids, c.store("n", "raw", map[string]string{PropPublished: "true"}, []byte("x")).ID)
	}
	c.fail["DeleteImage"] = nil
	deleted, err := Prune(context.Background(), c, "c", PrunePolicy{Name: "n", Owner: c.project, Keep: 2, JustPublished: ids[3]}, discard())
	if err != nil || !slices.Equal(deleted, ids[:2]) {
		t.Fatalf("deleted %v, %v; want %v", deleted, err, ids[:2])
	}
	c.store("n", "raw", map[string]string{PropPublished: "true"}, []byte("y"))
	c.fail["DeleteImage"] = errors.New("glance says no")
	_, err = Prune(context.Background(), c, "c", PrunePolicy{Name: "n", Owner: c.project, Keep: 1, JustPublished: ids[3]}, discard())
	if errs.ExitCode(err) != 8 {
		t.Errorf("err = %v, want a publish failure (exit 8)", err)
	}
}
