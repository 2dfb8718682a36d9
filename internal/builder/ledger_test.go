package builder

import (
	"slices"
	"testing"
)

func TestLedger(t *testing.T) {
	var l Ledger
	srv := Left{Kind: "server", Where: "it-a", Name: "p-image-builder-noble-x64", ID: "s1"}
	img := Left{Kind: "image", Where: "it-b", Name: "p-noble-x64", ID: "i1"}
	dir := Left{Kind: "directory", Name: "/tmp/.grib-qemu-1"}
	l.add(srv)
	l.add(img)
	l.add(srv) // recorded once
	l.add(dir)
	l.remove(img)
	l.remove(Left{Kind: "image", Where: "it-b", Name: "p-noble-x64", ID: "other"}) // not recorded: no change
	want := []string{"server p-image-builder-noble-x64 (s1) in cloud it-a", "directory /tmp/.grib-qemu-1"}
	if got := l.Left(); !slices.Equal(got, want) {
		t.Errorf("Left() = %q, want %q", got, want)
	}
	var none *Ledger
	none.add(srv)
	none.remove(srv)
	if got := none.Left(); got != nil {
		t.Errorf("a nil ledger holds %q", got)
	}
}
