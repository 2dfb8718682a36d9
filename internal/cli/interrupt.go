package cli

import (
	"strings"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

// SecondInterruptMessage is what the process prints when a second SIGINT or
// SIGTERM makes it exit before its cleanups finished: what is left (left:
// one entry per resource, file or directory the builds recorded and did not
// remove yet), and the sweep command that lists and removes cloud resources,
// with the cloud and prefix of this invocation (args without the program
// name, environ as os.Environ()).
func SecondInterruptMessage(args, environ, left []string) string {
	cloud := flagValue(args, "--os-cloud")
	if cloud == "" {
		cloud = config.Getenv(environ)("OS_CLOUD")
	}
	cmd := config.SweepDryRunCommand(cloud, flagValue(args, "--prefix"))
	what := "this build's servers, keypairs, temporary images or qemu files may be left"
	if len(left) > 0 {
		what = "left: " + strings.Join(left, ", ")
	}
	return "Error: interrupted again: exiting before cleanup finished; " + what + ". List cloud resources with `" + cmd +
		"` and remove them with the same command without --dry-run " +
		"(files and directories on this host: remove them by hand)"
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
