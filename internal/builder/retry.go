package builder

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/clock"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
)

// Bounds of the retries of creates and transfers.
const (
	createAttempts   = 3
	transferAttempts = 3
	retryPause       = time.Second
)

// createAdopting makes a create call safe to repeat after a transient
// failure (a 5xx, a reset, a cut or timed-out reply). Such a failure leaves
// it unknown whether the cloud made the resource, so before each new attempt
// find looks for one made by this build (by name and build ID) and adopts
// it; only when there is none is create called again. create returns the
// new resource's ID, or "" when the reply never named one. An ID that comes
// with an error (made, but a later read failed) is returned with the error.
func createAdopting(ctx context.Context, log *slog.Logger, what string,
	create func(context.Context) (string, error), find func(context.Context) (string, error),
) (string, error) {
	return createAdoptingWith(ctx, log, what, retryPause, create, find)
}

func createAdoptingWith(ctx context.Context, log *slog.Logger, what string, wait time.Duration,
	create func(context.Context) (string, error), find func(context.Context) (string, error),
) (string, error) {
	for attempt := 1; ; attempt++ {
		id, err := create(ctx)
		if err == nil || id != "" {
			return id, err
		}
		if !openstack.IsTransient(err) || attempt == createAttempts || ctx.Err() != nil {
			return "", err
		}
		log.Warn("create failed with a transient error; looking for what it may have made before trying again",
			"what", what, "attempt", attempt, "error", err)
		if err := clock.Sleep(ctx, wait); err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		found, ferr := find(ctx)
		if ferr != nil {
			return "", fmt.Errorf("%w (then looking for the %s failed too: %v)", err, what, ferr)
		}
		if found != "" {
			log.Info("the failed create had made it: adopted", "what", what, "id", found)
			return found, nil
		}
	}
}

// imagesOfBuild lists the images named name that carry this build's ID.
func imagesOfBuild(ctx context.Context, c openstack.Images, name, buildID string) ([]string, error) {
	// Hidden ones too: copies stay hidden until they are published.
	ims, err := c.ListImages(ctx, openstack.ImageQuery{Name: name, IncludeHidden: true})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, im := range ims {
		if im.Name == name && im.Properties[PropBuildID] == buildID {
			ids = append(ids, im.ID)
		}
	}
	return ids, nil
}

// firstOf returns the first ID, or "" when there is none.
func firstOf(ids []string, err error) (string, error) {
	if err != nil || len(ids) == 0 {
		return "", err
	}
	return ids[0], nil
}
