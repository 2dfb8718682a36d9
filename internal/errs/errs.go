// Package errs is the one errors package of the project: every failure the
// CLI reports is an *Error with a Kind, and each Kind maps to one documented
// exit code. Code elsewhere wraps with fmt.Errorf("...: %w", err) as usual and
// classifies at the point where the kind is known (errs.New / errs.Wrap).
package errs

import (
	"context"
	"errors"
	"fmt"
)

// Kind classifies a failure; it decides the process exit code.
type Kind int

// The kinds of failure. Their exit codes are listed in the README; never
// renumber them, callers script against them.
const (
	KindInternal    Kind = iota // unexpected failure (a bug, or an unclassified error)
	KindUsage                   // bad flag, argument or configuration value
	KindUnreachable             // a cloud or download server could not be reached
	KindAuth                    // authentication or authorisation refused
	KindNotFound                // a named cloud, image, flavor, network... does not exist
	KindBuild                   // the build failed (server ERROR, cloud-init, script, timeout)
	KindVerify                  // the built image failed verification; nothing was published
	KindPublish                 // snapshot, upload, copy or prune failed
	KindLocked                  // another build of the same image is in progress
	KindPartial                 // partly done: some cells of a matrix failed, or published but not pruned
	KindCallback                // the consumer callback failed
	KindInterrupted             // SIGINT/SIGTERM; cleanup ran
)

// ExitCode returns the documented process exit code of k.
func (k Kind) ExitCode() int {
	switch k {
	case KindUsage:
		return 2
	case KindUnreachable:
		return 3
	case KindAuth:
		return 4
	case KindNotFound:
		return 5
	case KindBuild:
		return 6
	case KindVerify:
		return 7
	case KindPublish:
		return 8
	case KindLocked:
		return 9
	case KindPartial:
		return 10
	case KindCallback:
		return 11
	case KindInterrupted:
		return 130
	default:
		return 1
	}
}

func (k Kind) String() string {
	switch k {
	case KindUsage:
		return "usage"
	case KindUnreachable:
		return "unreachable"
	case KindAuth:
		return "auth"
	case KindNotFound:
		return "not-found"
	case KindBuild:
		return "build-failed"
	case KindVerify:
		return "verify-failed"
	case KindPublish:
		return "publish-failed"
	case KindLocked:
		return "locked"
	case KindPartial:
		return "partial"
	case KindCallback:
		return "callback-failed"
	case KindInterrupted:
		return "interrupted"
	default:
		return "internal"
	}
}

// Kinds lists every kind, in exit-code order (for docs and tests).
func Kinds() []Kind {
	return []Kind{KindInternal, KindUsage, KindUnreachable, KindAuth, KindNotFound, KindBuild,
		KindVerify, KindPublish, KindLocked, KindPartial, KindCallback, KindInterrupted}
}

// Error is a classified error. Msg is one line for a human: it names the
// thing and what to do. Err, if set, is the cause.
type Error struct {
	Kind Kind
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	switch {
	case e.Msg == "" && e.Err != nil:
		return e.Err.Error()
	case e.Err != nil:
		return e.Msg + ": " + e.Err.Error()
	default:
		return e.Msg
	}
}

func (e *Error) Unwrap() error { return e.Err }

// New returns a classified error with a formatted message.
func New(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// Wrap classifies err with a message; it returns nil when err is nil.
func Wrap(k Kind, err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...), Err: err}
}

// Usage is shorthand for a KindUsage error: one line naming the flag and what is allowed.
func Usage(format string, args ...any) error { return New(KindUsage, format, args...) }

// KindOf returns the kind of the outermost classified error in err's chain.
// A context cancellation that was not classified counts as interrupted.
func KindOf(err error) Kind {
	if err == nil {
		return KindInternal
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	if errors.Is(err, context.Canceled) {
		return KindInterrupted
	}
	return KindInternal
}

// Is reports whether err is classified as kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }

// ExitCode is the process exit code for err (0 for nil).
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	return KindOf(err).ExitCode()
}
