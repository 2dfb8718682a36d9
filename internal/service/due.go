package service

import (
	"context"
	"fmt"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

// Due says which cells need a build now, with the reason ("" = not due):
//   - a publish cloud has no active image of the cell;
//   - the newest image is at least Config.Interval old;
//   - the runner version differs from the one recorded on the newest image
//     (its grib_runner_version property, else the state's record of the
//     last build): with runner version latest, a new GitHub release makes
//     every image due, so images never fall behind GitHub's 30-day window;
//     a pinned version that changed in the configuration does the same.
//
// A failed release look-up is logged and only skips the runner check.
func (s *Service) Due(ctx context.Context, cells []Cell) (map[string]string, error) {
	images, err := s.Latest(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := s.Config.serviceDir(s.getenv)
	if err != nil {
		return nil, err
	}
	st, err := stateStore{dir: dir}.Load()
	if err != nil {
		return nil, err
	}
	wanted := map[config.Arch]string{} // arch → the runner version a build would install
	now := s.now()
	out := map[string]string{}
	for _, cell := range cells {
		out[cell.ImageName] = s.dueReason(ctx, cell, images, st, wanted, now)
	}
	return out, nil
}

func (s *Service) dueReason(ctx context.Context, cell Cell, images []LatestImage, st *State, wanted map[config.Arch]string, now time.Time) string {
	var newest *LatestImage
	var oldestNewest time.Time
	for _, cloud := range s.Config.PublishCloudsOf(cell) {
		var im *LatestImage
		for i := range images {
			if images[i].ImageName == cell.ImageName && images[i].Cloud == cloud {
				im = &images[i]
			}
		}
		if im == nil {
			return "no image in cloud " + cloud
		}
		if newest == nil || im.Created.After(newest.Created) {
			newest = im
		}
		if oldestNewest.IsZero() || im.Created.Before(oldestNewest) {
			oldestNewest = im.Created
		}
	}
	if newest == nil { // no publish cloud (a local build): the state decides
		cs, ok := st.Cells[cell.ImageName]
		if !ok || cs.LastSuccess.IsZero() {
			return "never built"
		}
		oldestNewest = cs.LastSuccess
	}
	if age := now.Sub(oldestNewest); age >= s.Config.Interval {
		return fmt.Sprintf("the newest image is %s old (interval %s)", age.Round(time.Minute), s.Config.Interval)
	}
	have := ""
	if newest != nil {
		have = newest.RunnerVersion
	}
	if have == "" {
		have = st.Cells[cell.ImageName].RunnerVersion
	}
	want, err := s.wantedRunner(ctx, cell.Arch, wanted)
	if err != nil {
		s.log().Warn("runner release look-up failed; not checking for a new runner", "arch", string(cell.Arch), "error", err)
		return ""
	}
	if want != "" && have != "" && want != have {
		if s.Config.Build.RunnerVersion == "" {
			return fmt.Sprintf("runner %s was released (the image has %s)", want, have)
		}
		return fmt.Sprintf("runner version %s is configured (the image has %s)", want, have)
	}
	return ""
}

// wantedRunner is the runner version a build of arch would install: the
// pinned one, or the latest release (looked up once per arch).
func (s *Service) wantedRunner(ctx context.Context, arch config.Arch, cache map[config.Arch]string) (string, error) {
	if s.Config.Build.RunnerVersion != "" {
		return s.Config.Build.RunnerVersion, nil
	}
	if v, ok := cache[arch]; ok {
		return v, nil
	}
	if s.Resolver == nil {
		return "", nil
	}
	rel, err := s.Resolver.Resolve(ctx, "", arch, "")
	if err != nil {
		return "", err
	}
	cache[arch] = rel.Version
	return rel.Version, nil
}
