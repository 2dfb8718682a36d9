// Package clock holds the project's one context-aware wait. Code that waits
// takes it as an injectable func(context.Context, time.Duration) error, so
// tests can run waits on a fake clock; Sleep is the real one.
package clock

import (
	"context"
	"time"
)

// Sleep waits for d or until ctx ends, whichever comes first; then it
// returns ctx.Err().
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
