package config

// KeptBuilder wraps the error of a failed build whose builder was left
// running for debugging (config.RunSpec.KeepOnFailure): what is left and
// how to reach and remove it. The CLI prints it before the Error line.
type KeptBuilder struct {
	Err error // the build's failure

	Cloud, Prefix string // where the builder server is (openstack builder)
	Server, Name  string // its ID and name
	// SSH: the guest's address (host:port) and login user, the prefix's
	// private key file and a known_hosts file (0600) holding the host key
	// the build pinned. Addr is "" when SSH never answered.
	Addr, User, KeyFile, KnownHosts string
	// Jump is the jump host the build's SSH went through (zero: none).
	Jump SSHJump
}

func (k *KeptBuilder) Error() string { return k.Err.Error() }
func (k *KeptBuilder) Unwrap() error { return k.Err }

// Commands are the command lines that reach the kept builder over SSH
// ("" when SSH never answered) and that remove it.
func (k *KeptBuilder) Commands() (ssh, remove string) {
	if k.Addr != "" {
		ssh = SSHCommandVia(k.Jump, k.Addr, k.User, k.KeyFile, k.KnownHosts)
	}
	return ssh, SweepServerCommand(k.Cloud, k.Prefix, k.Server)
}
