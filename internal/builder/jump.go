package builder

import (
	"log/slog"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/provision"
)

// SSHJump is the jump host of a build's --ssh-jump (both builders reach
// their guest through it, as GuestConfig.Jump), nil without one. It reads the key and the
// known_hosts file (RunSpec.Validate checked them) and, without a key, needs
// an SSH agent: it runs in "prepare", before anything is created.
func SSHJump(j config.SSHJump, getenv func(string) string, log *slog.Logger) (*provision.Jump, error) {
	if j.Host == "" {
		return nil, nil
	}
	h, err := config.ParseJumpHost(j.Host)
	if err != nil {
		return nil, err
	}
	check, keys, err := config.ReadJumpKnownHosts(j.KnownHosts, h)
	if err != nil {
		return nil, err
	}
	jump := &provision.Jump{Addr: h.Addr(), User: h.User, HostKeyCallback: check, HostKeys: keys, KnownHostsFile: j.KnownHosts}
	auth := "key file"
	if j.Key != "" {
		if jump.Signer, err = config.ReadJumpKey(j.Key); err != nil {
			return nil, err
		}
	} else {
		auth = "SSH agent"
		if jump.AgentSocket = getenv("SSH_AUTH_SOCK"); jump.AgentSocket == "" {
			return nil, errs.Usage("--ssh-jump %s: no key for the jump host: give --ssh-jump-key, or run an SSH agent holding it (SSH_AUTH_SOCK is unset)", h)
		}
	}
	log.Info("SSH to the guest goes through a jump host", "jump", h.String(), "auth", auth, "known_hosts", j.KnownHosts)
	return jump, nil
}
