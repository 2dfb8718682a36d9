package builder

import "github.com/runner-image-builder/github-runner-image-builder/internal/provision"

// LocalLockName lets the external VM tests name the lock file a local build
// leaves in the state directory.
var LocalLockName = localLockName

// WithoutGuest makes l boot nothing: the base image file is exported as
// the built image, so the publishing path runs on a real cloud at no
// guest boot.
func WithoutGuest(l *Local) *Local { l.withoutGuest = true; return l }

// OpenStackWithoutGuest makes o skip the guest steps (ssh, cloud-init,
// script, verify, clean, power-off): with a base image the test Nova does
// not boot (no grib_test_guest), a build is the orchestration alone.
func OpenStackWithoutGuest(o *OpenStack) *OpenStack { o.withoutGuest = true; return o }

// WithGuestAt makes l boot nothing, as WithoutGuest, but run the guest
// steps (ssh ... power-off) on the SSH server at addr, a
// testenv.ShellGuest: the whole build path, manifest included, at no
// guest boot. The build needs --insecure-skip-host-key-check.
func WithGuestAt(l *Local, addr string) *Local { l.guestAt = addr; return l }

// RecordHostKeys makes o generate each build's host key as usual and append
// it to keys, so a test knows the key its guest got.
func RecordHostKeys(o *OpenStack, keys *[]provision.BuildHostKey) *OpenStack {
	rec := &recordingHostKeys{}
	o.hostKeys = func() (provision.BuildHostKey, error) {
		k, err := rec.make()
		*keys = rec.keys
		return k, err
	}
	return o
}

// PrivateKeyLines are the lines of a host key's private key file that hold
// the private key.
var PrivateKeyLines = privateKeyLines
