package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service/install"
	"github.com/runner-image-builder/github-runner-image-builder/internal/statedir"
)

// State is what the builder host remembers between runs, in
// <state dir>/service/state.json (0600): which images it last handed to its
// consumers (never pruned), when it last refreshed the base images, and
// the counters and times its metrics report.
type State struct {
	// Handed maps cloud → image name → the image ID last handed to the
	// consumers (the success callback returned 0, or there is none).
	Handed map[string]map[string]string `json:"handed"`
	// Cells holds per image name the outcome of its last build.
	Cells map[string]CellState `json:"cells"`
	// Builds counts finished cell builds by result (success, failure, locked).
	Builds          map[string]int `json:"builds"`
	LastSuccess     time.Time      `json:"last_success,omitzero"`
	LastBaseRefresh time.Time      `json:"last_base_refresh,omitzero"`
	// Seeded lists the base images init uploaded ("cloud/arch/base"), so a
	// base added to the matrix is seeded at the next setup or build.
	Seeded []string `json:"seeded,omitempty"`
}

// CellState is the last build of one image name.
type CellState struct {
	Result        string            `json:"result"` // success or failure
	Finished      time.Time         `json:"finished"`
	LastSuccess   time.Time         `json:"last_success,omitzero"`
	RunnerVersion string            `json:"runner_version,omitempty"` // of the last success
	Images        map[string]string `json:"images,omitempty"`         // cloud → ID of the last success
}

// ProtectedIDs returns every image ID handed to consumers, in any cloud.
func (s *State) ProtectedIDs() []string {
	var ids []string
	for _, byName := range s.Handed {
		for _, id := range byName {
			ids = append(ids, id)
		}
	}
	return ids
}

func (s *State) init() {
	if s.Handed == nil {
		s.Handed = map[string]map[string]string{}
	}
	if s.Cells == nil {
		s.Cells = map[string]CellState{}
	}
	if s.Builds == nil {
		s.Builds = map[string]int{}
	}
}

// stateStore reads and updates the state file under a lock, so that a
// build and `serve` (or two builds of different cells) never lose an update.
type stateStore struct{ dir string }

func (st stateStore) path() string     { return filepath.Join(st.dir, "state.json") }
func (st stateStore) lockPath() string { return filepath.Join(st.dir, "state.lock") }

// Load returns the current state (empty when there is none yet).
func (st stateStore) Load() (*State, error) {
	s := &State{}
	data, err := os.ReadFile(st.path())
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("reading service state: %w", err)
	default:
		if err := json.Unmarshal(data, s); err != nil {
			return nil, fmt.Errorf("service state %s is corrupt (move it away to start afresh): %w", st.path(), err)
		}
	}
	s.init()
	return s, nil
}

// Update applies fn to the state and saves it atomically.
func (st stateStore) Update(ctx context.Context, fn func(*State)) error {
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	unlock, err := statedir.Lock(lctx, st.lockPath())
	if err != nil {
		return fmt.Errorf("locking the service state: %w", err)
	}
	defer unlock()
	s, err := st.Load()
	if err != nil {
		return err
	}
	fn(s)
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the service state: %w", err)
	}
	if err := os.MkdirAll(st.dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", st.dir, err)
	}
	return install.WriteAtomic(st.path(), append(data, '\n'), 0o600)
}

// serviceDir is <state dir>/service: the state file and the build locks.
func (c *Config) serviceDir(getenv func(string) string) (string, error) {
	base := c.StateDir
	if base == "" {
		var err error
		if base, err = config.StateDir(getenv, c.Build.Prefix); err != nil {
			return "", err
		}
	}
	return filepath.Join(base, "service"), nil
}
