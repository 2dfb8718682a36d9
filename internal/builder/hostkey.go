package builder

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/provision"
	"github.com/runner-image-builder/github-runner-image-builder/internal/recipe"
)

// ErrConsoleForbidden means the cloud refuses to show the builder's console
// (Nova's os-console-output policy): the build goes on, and its guest
// failures come without a console tail, with a note saying why.
var ErrConsoleForbidden = errors.New("the cloud forbids reading the builder's console")

// consoleForbiddenNote is what a failure and the log say in place of the
// console tail on such a cloud.
const consoleForbiddenNote = "no console tail: the cloud forbids reading the builder's console (os-console-output policy)"

// hostKeySource makes one build's SSH host key.
type hostKeySource func() (provision.BuildHostKey, error)

func newBuildHostKey() (provision.BuildHostKey, error) { return provision.NewBuildHostKey(rand.Reader) }

// guestHostKey generates the build's SSH host key (with gen; nil: a fresh
// ed25519 key) and the user-data that hands it to the guest beside
// userData: the recipe or the --user-data file. The key exists only in
// memory and in that user-data, which lives as long as the builder.
func guestHostKey(gen hostKeySource, userData []byte, log *slog.Logger) (provision.BuildHostKey, []byte, error) {
	if gen == nil {
		gen = newBuildHostKey
	}
	key, err := gen()
	if err != nil {
		return provision.BuildHostKey{}, nil, errs.Wrap(errs.KindInternal, err, "the guest's SSH host key")
	}
	pem, err := key.PrivateKeyPEM()
	if err != nil {
		return provision.BuildHostKey{}, nil, errs.Wrap(errs.KindInternal, err, "the guest's SSH host key")
	}
	ud, err := recipe.WithHostKey(userData, recipe.HostKey{PrivateKeyPEM: pem, PublicKey: key.AuthorizedKey()})
	clear(pem)
	if err != nil {
		return provision.BuildHostKey{}, nil, fmt.Errorf("adding the SSH host key to the user-data: %w", err)
	}
	log.Info("SSH host key generated for the guest; the user-data carries it", "host_key", key.Fingerprint())
	return key, ud, nil
}
