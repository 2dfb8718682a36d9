package config

import "strings"

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
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
