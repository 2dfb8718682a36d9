package config

import (
	"strconv"
	"strings"
)

// SweepDryRunCommand is the command line that lists what builds of prefix
// left in cloud (the environment's OS_CLOUD when cloud is ""), as the
// messages about leftovers print it; without --dry-run it removes them.
// Words are quoted for a POSIX shell where they need it.
func SweepDryRunCommand(cloud, prefix string) string {
	cmd := "github-runner-image-builder"
	if cloud != "" {
		cmd += " --os-cloud " + shellWord(cloud)
	}
	return cmd + " sweep --prefix " + shellWord(prefix) + " --older-than 1m --dry-run"
}

// shellWord quotes s for a POSIX shell when it needs it.
func shellWord(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./@:,+=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// SweepServerCommand is the command line that removes the one builder
// server id of prefix in cloud that `run --keep-on-failure` left running.
func SweepServerCommand(cloud, prefix, id string) string {
	cmd := "github-runner-image-builder"
	if cloud != "" {
		cmd += " --os-cloud " + shellWord(cloud)
	}
	return cmd + " sweep --prefix " + shellWord(prefix) + " --server " + shellWord(id)
}

// SSHCommand is the OpenSSH command line that reaches a guest at addr
// (host:port) as user with the private key keyFile, checking its host key
// against knownHosts only (never trusting another).
func SSHCommand(addr, user, keyFile, knownHosts string) string {
	return SSHCommandVia(SSHJump{}, addr, user, keyFile, knownHosts)
}

// SSHCommandVia is SSHCommand through the jump host jump (zero: direct),
// as a ProxyCommand that checks the jump host's key against its own
// known_hosts file and logs in with its key (or the SSH agent).
func SSHCommandVia(jump SSHJump, addr, user, keyFile, knownHosts string) string {
	cmd := "ssh " + sshOptions(keyFile, knownHosts)
	if jump.Host != "" {
		if j, err := ParseJumpHost(jump.Host); err == nil {
			proxy := "ssh " + sshOptions(jump.Key, jump.KnownHosts) + " -p " + strconv.Itoa(j.Port) + " -W %h:%p " + shellWord(j.User+"@"+j.Host)
			cmd += " -o ProxyCommand=" + shellWord(proxy)
		}
	}
	host, port := addr, "22"
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		host, port = strings.Trim(addr[:i], "[]"), addr[i+1:]
	}
	return cmd + " -p " + shellWord(port) + " " + shellWord(user+"@"+host)
}

// sshOptions are the options of an ssh that logs in with keyFile ("": the
// agent's keys) and trusts only the host keys in knownHosts.
func sshOptions(keyFile, knownHosts string) string {
	o := ""
	if keyFile != "" {
		o = "-i " + shellWord(keyFile) + " -o IdentitiesOnly=yes "
	}
	return o + "-o UserKnownHostsFile=" + shellWord(knownHosts) + " -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null"
}
