package statedir

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Polling bounds of Lock: flock cannot be interrupted by a context, so Lock
// retries a non-blocking flock, from small intervals up to this cap.
const (
	lockPollMin = 10 * time.Millisecond
	lockPollMax = 250 * time.Millisecond
)

// LockedError reports a lock held by another process (or another open of
// the same file in this one). PID is the holder's process ID as it wrote it
// in the lock file, 0 when unknown (the holder had not written it yet).
type LockedError struct {
	Path  string
	PID   int
	Cause error // why we stopped waiting (ctx.Err()), nil for TryLock
}

func (e *LockedError) Error() string {
	holder := "another process"
	if e.PID > 0 {
		holder = "pid " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("%s is locked by %s", e.Path, holder)
}

func (e *LockedError) Unwrap() error { return e.Cause }

// Lock takes an exclusive flock on path (created 0600, its directory 0700
// if missing) and writes this process's PID in it. It waits while another
// holder has it, until ctx ends: on a deadline it returns a KindLocked error
// whose *LockedError names the holder's PID; on cancellation an unclassified
// error wrapping context.Canceled (reported as interrupted). unlock releases
// the lock; it is safe to call more than once. The lock also ends when the
// process does, however it ends.
func Lock(ctx context.Context, path string) (unlock func(), err error) {
	f, err := openLockFile(path)
	if err != nil {
		return nil, err
	}
	wait := lockPollMin
	for {
		locked, err := tryFlock(f)
		if err != nil {
			f.Close()
			return nil, err
		}
		if locked {
			return holdLock(f), nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			pid := readPID(f)
			f.Close()
			lerr := &LockedError{Path: path, PID: pid, Cause: ctx.Err()}
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil, fmt.Errorf("waiting for lock: %w", lerr)
			}
			return nil, &errs.Error{Kind: errs.KindLocked, Err: lerr}
		case <-t.C:
		}
		wait = min(2*wait, lockPollMax)
	}
}

// TryLock is Lock without waiting: if another holder has path it returns
// at once a KindLocked error whose *LockedError names the holder's PID.
func TryLock(path string) (unlock func(), err error) {
	f, err := openLockFile(path)
	if err != nil {
		return nil, err
	}
	locked, err := tryFlock(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	if !locked {
		pid := readPID(f)
		f.Close()
		return nil, &errs.Error{Kind: errs.KindLocked, Err: &LockedError{Path: path, PID: pid}}
	}
	return holdLock(f), nil
}

func openLockFile(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating the directory of lock %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", path, err)
	}
	return f, nil
}

// tryFlock takes an exclusive flock without blocking; false means another
// open file description holds it.
func tryFlock(f *os.File) (bool, error) {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, syscall.EINTR):
			continue
		default:
			return false, fmt.Errorf("locking %s: %w", f.Name(), err)
		}
	}
}

// holdLock records our PID in the locked file and returns its unlock func.
func holdLock(f *os.File) func() {
	// Best effort: the PID only makes the holder's identity reportable.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			_ = f.Truncate(0)
			_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			_ = f.Close()
		})
	}
}

// readPID returns the PID written in the lock file, 0 if none.
func readPID(f *os.File) int {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
