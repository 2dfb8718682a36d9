package builder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
)

// LatestBuildID returns the ID of the newest active image named q.ImageName
// (any status with q.AnyStatus), or "" when there is none.
func (o *OpenStack) LatestBuildID(ctx context.Context, log *slog.Logger, q config.LatestQuery) (string, error) {
	if err := q.Validate(); err != nil {
		return "", err
	}
	c, err := o.dial(ctx, q.Cloud, q.CloudsPaths, config.HostProxy{}, log)
	if err != nil {
		return "", err
	}
	return c.LatestImageID(ctx, q.ImageName, q.AnyStatus)
}

// Sweep removes what crashed or killed runs and inits of spec.Prefix left in
// spec.Cloud, if created at least spec.OlderThan ago:
//   - builder servers (named config.BuilderName for any base and arch);
//   - temporary images: a build's snapshot or copy that was never published
//     (it has our build ID but not the published marker), and base image
//     uploads that never became active;
//   - the prefix's keypair and security group, but only when no builder of
//     the prefix is left (they are recreated by the next run or init). Those
//     of the empty prefix are shared with the Python tool: never removed.
//
// Published images and active base images are never touched. With
// spec.DryRun nothing is removed.
func (o *OpenStack) Sweep(ctx context.Context, log *slog.Logger, spec config.SweepSpec) ([]config.SweptResource, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	c, err := o.dial(ctx, spec.Cloud, spec.CloudsPaths, config.HostProxy{}, log)
	if err != nil {
		return nil, err
	}
	if spec.Server != "" {
		return o.sweepServer(ctx, log, c, spec)
	}
	cutoff := o.now().Add(-spec.OlderThan)
	builderNames, baseNames := map[string]bool{}, map[string]bool{}
	for _, a := range config.Arches() {
		for _, b := range config.Bases() {
			builderNames[config.BuilderName(spec.Prefix, b, a)] = true
			baseNames[config.BaseImageName(spec.Prefix, b, a)] = true
		}
	}
	var out []config.SweptResource
	var failed []error
	remove := func(s config.SweptResource, del func() error) {
		if spec.DryRun {
			out = append(out, s)
			return
		}
		if err := del(); err != nil {
			failed = append(failed, fmt.Errorf("%s %s (%s): %w", s.Kind, s.Name, s.ID, err))
			return
		}
		log.Info("swept", "kind", s.Kind, "name", s.Name, "id", s.ID)
		out = append(out, s)
	}

	builders := func() ([]openstack.Server, error) {
		all, err := c.ListServers(ctx, spec.Prefix+"-image-builder-")
		return slices.DeleteFunc(all, func(s openstack.Server) bool { return !builderNames[s.Name] }), err
	}
	servers, err := builders()
	if err != nil {
		return nil, err
	}
	for _, s := range servers {
		if s.Created.Before(cutoff) {
			remove(config.SweptResource{Kind: "server", Name: s.Name, ID: s.ID}, func() error { return c.DeleteServer(ctx, s.ID) })
		}
	}

	images, err := c.ListImages(ctx, openstack.ImageQuery{Owner: c.ProjectID(), IncludeHidden: true})
	if err != nil {
		return out, err
	}
	slices.Reverse(images) // oldest first
	for _, im := range images {
		if !im.CreatedAt.Before(cutoff) || im.Owner != c.ProjectID() {
			continue
		}
		prefix, hasPrefix := im.Properties[PropPrefix]
		temporary := hasPrefix && prefix == spec.Prefix && im.Properties[PropBuildID] != "" && !Ours(im)
		deadBase := baseNames[im.Name] && im.Status != openstack.ImageActive
		if temporary || deadBase {
			remove(config.SweptResource{Kind: "image", Name: im.Name, ID: im.ID}, func() error { return c.DeleteImage(ctx, im.ID) })
		}
	}

	if spec.Prefix != "" {
		left, err := builders()
		if err != nil {
			return out, err
		}
		if spec.DryRun {
			left = slices.DeleteFunc(left, func(s openstack.Server) bool { return s.Created.Before(cutoff) })
		}
		if len(left) == 0 {
			kp := config.KeypairName(spec.Prefix)
			switch _, err := c.GetKeypair(ctx, kp); {
			case err == nil:
				remove(config.SweptResource{Kind: "keypair", Name: kp, ID: kp}, func() error { return c.DeleteKeypair(ctx, kp) })
			case !errs.Is(err, errs.KindNotFound):
				failed = append(failed, err)
			}
			groups, err := c.ListSecurityGroups(ctx, config.SecurityGroupName(spec.Prefix))
			if err != nil {
				failed = append(failed, err)
			}
			for _, g := range groups {
				if g.CreatedAt.Before(cutoff) {
					remove(config.SweptResource{Kind: "security-group", Name: g.Name, ID: g.ID}, func() error { return c.DeleteSecurityGroup(ctx, g.ID) })
				}
			}
		} else {
			log.Info("keypair and security group kept: builders of the prefix remain", "builders", len(left))
		}
	}
	if len(failed) > 0 {
		return out, errs.Wrap(errs.KindPublish, errors.Join(failed...), "sweep of prefix %q in cloud %s", spec.Prefix, spec.Cloud)
	}
	return out, nil
}

// sweepServer removes the one builder server spec.Server of spec.Prefix
// (what `run --keep-on-failure` left), whatever its age; a server that is
// not a builder of the prefix is refused, one already gone is not an error.
func (o *OpenStack) sweepServer(ctx context.Context, log *slog.Logger, c Cloud, spec config.SweepSpec) ([]config.SweptResource, error) {
	servers, err := c.ListServers(ctx, spec.Prefix+"-image-builder-")
	if err != nil {
		return nil, err
	}
	for _, s := range servers {
		if s.ID != spec.Server {
			continue
		}
		if !isBuilderName(spec.Prefix, s.Name) {
			break
		}
		r := config.SweptResource{Kind: "server", Name: s.Name, ID: s.ID}
		if spec.DryRun {
			return []config.SweptResource{r}, nil
		}
		if err := c.DeleteServer(ctx, s.ID); err != nil {
			return nil, errs.Wrap(errs.KindPublish, err, "sweep of server %s (%s) in cloud %s", s.Name, s.ID, spec.Cloud)
		}
		removeKeptKnownHosts(o.getenv(), spec.Prefix, s.ID)
		log.Info("swept", "kind", r.Kind, "name", r.Name, "id", r.ID)
		return []config.SweptResource{r}, nil
	}
	return nil, errs.New(errs.KindNotFound, "--server %s: no builder server of prefix %q with that ID in cloud %s (already removed?)", spec.Server, spec.Prefix, spec.Cloud)
}

// isBuilderName reports whether name is a builder server name of prefix.
func isBuilderName(prefix, name string) bool {
	for _, a := range config.Arches() {
		for _, b := range config.Bases() {
			if config.BuilderName(prefix, b, a) == name {
				return true
			}
		}
	}
	return false
}
