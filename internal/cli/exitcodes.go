package cli

import (
	"fmt"
	"strings"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// kindMeaning says, for the README and --help, when a kind of failure happens.
func kindMeaning(k errs.Kind) string {
	switch k {
	case errs.KindInternal:
		return "unexpected failure: a bug, or an error nobody classified"
	case errs.KindUsage:
		return "bad flag, argument, environment variable or configuration value; nothing was touched"
	case errs.KindUnreachable:
		return "a cloud, GitHub or a download server could not be reached (or answered nonsense)"
	case errs.KindAuth:
		return "authentication or authorisation refused"
	case errs.KindNotFound:
		return "a named cloud, image, flavor, network or release does not exist"
	case errs.KindBuild:
		return "the build failed: server ERROR, cloud-init, the script, or a phase deadline"
	case errs.KindVerify:
		return "the built image failed verification; nothing was published"
	case errs.KindPublish:
		return "snapshot, upload or copy failed; nothing was published"
	case errs.KindLocked:
		return "another build of the same image is in progress"
	case errs.KindPartial:
		return "partly done: some cells of a build matrix failed, or run published its image but pruning old revisions failed"
	case errs.KindCallback:
		return "the consumer callback failed"
	case errs.KindInterrupted:
		return "SIGINT or SIGTERM; cleanup ran"
	}
	return ""
}

// ExitCodeTable is the README's exit-code table, generated from internal/errs.
func ExitCodeTable() string {
	var b strings.Builder
	b.WriteString("| exit code | kind | when |\n| --- | --- | --- |\n| 0 | | success |\n")
	for _, k := range errs.Kinds() {
		meaning := kindMeaning(k)
		if meaning == "" {
			meaning = "(undocumented)"
		}
		fmt.Fprintf(&b, "| %d | `%s` | %s |\n", k.ExitCode(), k, meaning)
	}
	return b.String()
}

// exitCodeSummary is the one-paragraph list in the root command's help.
func exitCodeSummary() string {
	parts := []string{"0 ok"}
	for _, k := range errs.Kinds() {
		parts = append(parts, fmt.Sprintf("%d %s", k.ExitCode(), k))
	}
	return strings.Join(parts, ", ") + "."
}
