package builder

import (
	"context"
	"strings"
	"testing"
	"time"
)

// On a terminal the openstack builder's phases are lines named by the
// image, and the copy's lines give the bytes sent to the upload clouds.
func TestOpenStackCopyProgress(t *testing.T) {
	b, _ := publishFixture(t, "east", "west")
	var out strings.Builder
	ticks := make(chan time.Time)
	now := time.Date(2026, 12, 3, 14, 0, 0, 0, time.UTC)
	b.prog = newProgress(&out, func() (<-chan time.Time, func()) { return ticks, func() {} }, func() time.Time { return now })
	b.prog.name = b.spec.ImageName
	b.prog.observe(Event{Kind: StepStarted, Step: "copy"})
	if err := b.copy(context.Background()); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Second)
	b.prog.observe(Event{Kind: StepEnded, Step: "copy"})
	if err := b.pub.cleanupCopies(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	n := len("the built image") * 2 // each upload cloud reads it once
	want := "[" + b.spec.ImageName + "] ==> copy\n[" + b.spec.ImageName + "]     copy: done in 0:02, " + bytesIEC(int64(n)) + " at "
	if !strings.HasPrefix(out.String(), want) {
		t.Errorf("progress:\n%s\nwant it to start with:\n%s", out.String(), want)
	}
}
