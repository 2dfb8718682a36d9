package builder

import (
	"fmt"
	"sync"
)

// Ledger records what builds have made and not yet removed: builder
// servers, images not yet published, scratch files and qemu work
// directories. Builds add and remove entries as they go, so a process that
// must exit before its cleanups ran (a second Ctrl-C) can say what it
// leaves. Published images are not entries: they are meant to stay. The
// zero value is ready; a nil *Ledger records nothing. Safe for concurrent use.
type Ledger struct {
	mu   sync.Mutex
	left []Left
}

// Left is one thing a build made and has not removed yet.
type Left struct {
	Kind  string // server, image, file, directory
	Where string // the cloud, or "" for a path on this host
	Name  string // a resource's name, or the path
	ID    string // a resource's ID
}

func (x Left) String() string {
	if x.Where == "" {
		return fmt.Sprintf("%s %s", x.Kind, x.Name)
	}
	return fmt.Sprintf("%s %s (%s) in cloud %s", x.Kind, x.Name, x.ID, x.Where)
}

func (x Left) same(y Left) bool {
	return x.Kind == y.Kind && x.Where == y.Where && x.Name == y.Name && x.ID == y.ID
}

// Observe records the Made and Removed events of builds; use it as (or
// among) a build's Observer.
func (l *Ledger) Observe(ev Event) {
	switch ev.Kind {
	case Made:
		l.add(ev.What)
	case Removed:
		l.remove(ev.What)
	}
}

func (l *Ledger) add(x Left) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, y := range l.left {
		if y.same(x) {
			return
		}
	}
	l.left = append(l.left, x)
}

func (l *Ledger) remove(x Left) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, y := range l.left {
		if y.same(x) {
			l.left = append(l.left[:i], l.left[i+1:]...)
			return
		}
	}
}

// Left returns what is recorded, oldest first, as one line each.
func (l *Ledger) Left() []string {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.left))
	for _, x := range l.left {
		out = append(out, x.String())
	}
	return out
}
