package cli_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/runner-image-builder/github-runner-image-builder/"

// layers are the project's packages from the top down; a package may
// import only packages of a lower layer (or, for "domain", its own layer's
// packages listed in domainImports). docs/ARCHITECTURE.md draws the same.
var layers = [][]string{
	{"cmd/github-runner-image-builder"},
	{"internal/cli"},
	{"internal/service"},
	{"internal/build"},
	{"internal/builder"},
	{"internal/baseimage", "internal/manifest", "internal/openstack", "internal/provision", "internal/qemu", "internal/recipe",
		"internal/release", "internal/statedir", "internal/service/install"},
	{"internal/config"},
	{"internal/errs", "internal/clock", "internal/atomicfile"},
}

// domainImports are the imports allowed inside the domain layer.
var domainImports = map[string][]string{
	"internal/recipe":    {"internal/release"},
	"internal/baseimage": {"internal/statedir"}, // the serial record's lock
}

// violations returns "A imports B" for every import of deps (package ->
// its direct internal imports) that does not point down the layers.
func violations(deps map[string][]string) []string {
	layer := map[string]int{}
	for i, ps := range layers {
		for _, p := range ps {
			layer[p] = i
		}
	}
	var out []string
	for pkg, imports := range deps {
		from, ok := layer[pkg]
		if !ok {
			continue // test infrastructure (testenv, faultproxy)
		}
		for _, imp := range imports {
			to, ok := layer[imp]
			if !ok {
				out = append(out, pkg+" imports "+imp+", which is in no layer")
				continue
			}
			if to < from || (to == from && !slices.Contains(domainImports[pkg], imp)) {
				out = append(out, pkg+" imports "+imp)
			}
		}
	}
	slices.Sort(out)
	return out
}

// goList runs `go list` in the module root with args and returns its lines.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		if goTool, err = exec.LookPath("go"); err != nil {
			t.Fatalf("the go tool is needed to list the imports: %v", err)
		}
	}
	cmd := exec.Command(goTool, append([]string{"list"}, args...)...)
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, stderr.String())
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		lines = append(lines, strings.TrimPrefix(sc.Text(), module))
	}
	return lines
}

// Nothing below the command line depends on it: the builders and the
// builder host are called by the CLI, never the other way round.
func TestNothingBelowTheCLIDependsOnIt(t *testing.T) {
	for _, pkg := range []string{"internal/builder", "internal/service", "internal/build"} {
		deps := goList(t, "-deps", "./"+pkg)
		if slices.Contains(deps, "internal/cli") {
			// Name the package that pulls it in.
			var via []string
			for _, line := range goList(t, "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./"+pkg) {
				if f := strings.Fields(line); len(f) > 1 && slices.Contains(f[1:], module+"internal/cli") {
					via = append(via, strings.TrimPrefix(f[0], module))
				}
			}
			t.Errorf("go list -deps ./%s contains internal/cli (imported by %v)", pkg, via)
		}
	}
}

// Every import points down the layers.
func TestImportsPointDown(t *testing.T) {
	deps := map[string][]string{}
	for _, line := range goList(t, "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...") {
		f := strings.Fields(line)
		for _, imp := range f[1:] {
			if p, ok := strings.CutPrefix(imp, module); ok {
				deps[f[0]] = append(deps[f[0]], p)
			}
		}
		if _, ok := deps[f[0]]; !ok {
			deps[f[0]] = nil
		}
	}
	for pkg := range deps {
		known := false
		for _, ps := range layers {
			known = known || slices.Contains(ps, pkg)
		}
		if !known && pkg != "internal/testenv" && pkg != "internal/faultproxy" {
			t.Errorf("package %s is in no layer: add it to layers (and docs/ARCHITECTURE.md)", pkg)
		}
	}
	for _, v := range violations(deps) {
		t.Errorf("%s: imports must point down (docs/ARCHITECTURE.md)", v)
	}
}

// The checker itself flags an import that points up, a same-layer import
// and an unknown package, and passes a downward one.
func TestViolationsCatchesUpwardImports(t *testing.T) {
	got := violations(map[string][]string{
		"internal/builder":   {"internal/cli", "internal/config"},
		"internal/qemu":      {"internal/openstack", "internal/errs"},
		"internal/recipe":    {"internal/release"},
		"internal/config":    {"internal/nowhere"},
		"internal/testenv":   {"internal/cli"},
		"internal/service":   {"internal/build"},
		"internal/baseimage": nil,
	})
	want := []string{"internal/builder imports internal/cli", "internal/config imports internal/nowhere, which is in no layer",
		"internal/qemu imports internal/openstack"}
	if !slices.Equal(got, want) {
		t.Errorf("violations = %q, want %q", got, want)
	}
}
