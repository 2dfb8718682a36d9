package builder

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
)

// PrunePolicy says which revisions of an image name pruning may delete.
type PrunePolicy struct {
	Name string // exact image name
	// Owner is the project whose images may be deleted (the cloud's
	// project); images of other projects (public, shared) are never touched.
	Owner string
	// Keep is how many revisions to keep, the just-published one included (≥ 1).
	Keep int
	// JustPublished is the image this run published: never deleted.
	JustPublished string
	// AdoptUnmarked also counts, and deletes, images of Name that carry none
	// of our properties (published by the Python tool): for migration.
	AdoptUnmarked bool
	// Protect lists images never deleted (RunSpec.Protect: the builder
	// host's images in use by its consumers); they count as kept.
	Protect []string
}

// Ours reports whether an image was published by this tool.
func Ours(im openstack.Image) bool { return im.Properties[PropPublished] == "true" }

// unmarked reports whether an image carries none of our build properties
// (the Python tool's). An image we are still building or copying has a build
// ID but no published marker: it is neither ours nor unmarked.
func unmarked(im openstack.Image) bool {
	return !Ours(im) && im.Properties[PropBuildID] == ""
}

// PruneVictims returns the images that pruning deletes, oldest first:
// among the active images named p.Name owned by p.Owner that are ours (or
// unmarked, with AdoptUnmarked), everything past the newest p.Keep (by
// creation time, then ID), except the newest image of that name of any kind
// and p.JustPublished. Images not active (a concurrent run's upload in
// progress), of other projects or not ours are never victims, so two runs
// of the same name pruning at once can only delete revisions both agree are
// old.
func PruneVictims(images []openstack.Image, p PrunePolicy) []openstack.Image {
	if p.Keep < 1 {
		return nil // refuse to delete everything; config validation keeps this unreachable
	}
	named := slices.DeleteFunc(slices.Clone(images), func(im openstack.Image) bool { return im.Name != p.Name })
	slices.SortFunc(named, newestFirst)
	newest := ""
	if len(named) > 0 {
		newest = named[0].ID
	}
	var candidates []openstack.Image
	for _, im := range named {
		if im.Status != openstack.ImageActive || im.Owner != p.Owner {
			continue
		}
		if Ours(im) || (p.AdoptUnmarked && unmarked(im)) || im.ID == p.JustPublished {
			candidates = append(candidates, im)
		}
	}
	kept := 0
	if slices.ContainsFunc(candidates, func(im openstack.Image) bool { return im.ID == p.JustPublished }) {
		kept = 1
	}
	var victims []openstack.Image
	for _, im := range candidates {
		switch {
		case im.ID == p.JustPublished:
		case im.ID == newest, slices.Contains(p.Protect, im.ID):
			kept++
		case kept < p.Keep:
			kept++
		default:
			victims = append(victims, im)
		}
	}
	slices.Reverse(victims)
	return victims
}

func newestFirst(a, b openstack.Image) int {
	return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), strings.Compare(a.ID, b.ID))
}

// pruneImages is the Images calls Prune needs.
type pruneImages interface {
	ListImagesByName(ctx context.Context, name string, activeOnly bool) ([]openstack.Image, error)
	DeleteImage(ctx context.Context, id string) error
}

// Prune deletes the victims of p in one cloud, oldest first, and returns
// their IDs. A failure is errs.KindPublish; the images deleted before it
// are returned too.
func Prune(ctx context.Context, c pruneImages, cloud string, p PrunePolicy, log *slog.Logger) ([]string, error) {
	all, err := c.ListImagesByName(ctx, p.Name, false)
	if err != nil {
		return nil, errs.Wrap(errs.KindPublish, err, "pruning %s in cloud %s: listing its revisions", p.Name, cloud)
	}
	var deleted []string
	var failed []error
	for _, im := range PruneVictims(all, p) {
		if err := c.DeleteImage(ctx, im.ID); err != nil {
			failed = append(failed, fmt.Errorf("image %s: %w", im.ID, err))
			continue
		}
		deleted = append(deleted, im.ID)
		if log != nil {
			log.Info("old revision pruned", "cloud", cloud, "image", im.Name, "id", im.ID,
				"created", im.CreatedAt, "adopted", unmarked(im))
		}
	}
	if len(failed) > 0 {
		return deleted, errs.Wrap(errs.KindPublish, errors.Join(failed...), "pruning %s in cloud %s", p.Name, cloud)
	}
	return deleted, nil
}
