package cli

import (
	"strings"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

// SecondInterruptMessage is what the process prints when a second SIGINT or
// SIGTERM makes it exit before its cleanups finished: that resources of the
// build may be left, and the sweep command that lists and removes them, with
// the cloud and prefix of this invocation (args without the program name,
// environ as os.Environ()).
func SecondInterruptMessage(args, environ []string) string {
	cloud := flagValue(args, "--os-cloud")
	if cloud == "" {
		cloud = config.Getenv(environ)("OS_CLOUD")
	}
	cmd := "github-runner-image-builder"
	if cloud != "" {
		cmd += " --os-cloud " + shellWord(cloud)
	}
	cmd += " sweep --prefix " + shellWord(flagValue(args, "--prefix"))
	return "Error: interrupted again: exiting before cleanup finished; this build's servers, " +
		"keypairs, temporary images or qemu files may be left. List them with `" + cmd +
		" --older-than 1m --dry-run` and remove them with the same command without --dry-run " +
		"(local builds: remove the .grib-qemu-* directory beside --output)"
}

// flagValue returns the last value of a long flag given as "--name value"
// or "--name=value", or "".
func flagValue(args []string, name string) string {
	v := ""
	for i, a := range args {
		if a == "--" {
			break
		}
		if after, ok := strings.CutPrefix(a, name+"="); ok {
			v = after
		} else if a == name && i+1 < len(args) {
			v = args[i+1]
		}
	}
	return v
}

// shellWord quotes s for a POSIX shell when it needs it.
func shellWord(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
