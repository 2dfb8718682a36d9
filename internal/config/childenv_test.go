package config

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestChildEnv(t *testing.T) {
	parent := []string{
		"PATH=/usr/bin:/bin", "HOME=/home/b", "LANG=C.UTF-8", "LC_TIME=en_GB.UTF-8", "TZ=UTC", "TMPDIR=/var/tmp",
		"IMAGE_BUILDER_SECRET_TOKEN=s1", "GITHUB_TOKEN=s2", "OS_PASSWORD=s3", "OS_TOKEN=s4",
		"OS_APPLICATION_CREDENTIAL_SECRET=s5", "OS_CLOUD=c", "https_proxy=http://proxy:3128", "EMPTY=",
		"XDG_RUNTIME_DIR=/run/user/1", "SSL_CERT_FILE=/etc/ca.pem",
	}
	for _, tc := range []struct {
		name  string
		env   []string
		extra []string
		want  []string
	}{
		{"allow-list only", parent, nil, []string{"PATH=/usr/bin:/bin", "HOME=/home/b", "TMPDIR=/var/tmp", "TZ=UTC", "LANG=C.UTF-8", "LC_TIME=en_GB.UTF-8"}},
		{"network on request", parent, NetworkEnv(), []string{"PATH=/usr/bin:/bin", "HOME=/home/b", "TMPDIR=/var/tmp", "TZ=UTC", "LANG=C.UTF-8", "LC_TIME=en_GB.UTF-8", "https_proxy=http://proxy:3128", "SSL_CERT_FILE=/etc/ca.pem"}},
		{"extra once", parent, []string{"XDG_RUNTIME_DIR", "XDG_RUNTIME_DIR", "PATH"}, []string{"PATH=/usr/bin:/bin", "HOME=/home/b", "TMPDIR=/var/tmp", "TZ=UTC", "LANG=C.UTF-8", "LC_TIME=en_GB.UTF-8", "XDG_RUNTIME_DIR=/run/user/1"}},
		{"empty parent", nil, nil, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ChildEnv(Getenv(tc.env), tc.extra...)
			if got == nil {
				t.Fatal("ChildEnv returned nil: exec.Cmd would pass the whole environment")
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("ChildEnv = %q, want %q", got, tc.want)
			}
		})
	}
}

// A child started with ChildEnv does not see the secrets of its parent,
// even when the parent's environment is empty (a nil Env would inherit).
func TestChildEnvChildSeesNoSecret(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	t.Setenv("IMAGE_BUILDER_SECRET_LEAK", "leaked-secret")
	for _, environ := range [][]string{os.Environ(), {}} {
		cmd := exec.Command(sh, "-c", "set")
		cmd.Env = ChildEnv(Getenv(environ))
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "leaked-secret") {
			t.Errorf("the child saw the secret:\n%s", out)
		}
	}
}

// execEnvProblems reports every exec.Cmd in f that would inherit this
// process's environment: a function that calls exec.Command or
// exec.CommandContext (or makes an exec.Cmd) without setting a .Env in the
// same function, an Env of nil or built from os.Environ, and any use of
// os.Environ at all (outside cmd, where the environment is read once).
func execEnvProblems(fset *token.FileSet, f *ast.File, mayReadEnviron bool) []string {
	execName, osName := "", ""
	for _, imp := range f.Imports {
		name := ""
		if imp.Name != nil {
			name = imp.Name.Name
		}
		switch imp.Path.Value {
		case `"os/exec"`:
			execName = cmpOr(name, "exec")
		case `"os"`:
			osName = cmpOr(name, "os")
		}
	}
	isSel := func(e ast.Expr, pkg, sel string) bool {
		s, ok := e.(*ast.SelectorExpr)
		if !ok || pkg == "" {
			return false
		}
		id, ok := s.X.(*ast.Ident)
		return ok && id.Name == pkg && s.Sel.Name == sel
	}
	mentionsEnviron := func(n ast.Node) bool {
		found := false
		ast.Inspect(n, func(n ast.Node) bool {
			if e, ok := n.(ast.Expr); ok && isSel(e, osName, "Environ") {
				found = true
			}
			return !found
		})
		return found
	}
	var out []string
	at := func(n ast.Node, msg string) { out = append(out, fset.Position(n.Pos()).String()+": "+msg) }
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Body == nil {
			continue
		}
		// Each command made must be held in a variable whose Env is set:
		// cmd := exec.Command(...); cmd.Env = ... (or exec.Cmd{Env: ...}).
		isExec := func(e ast.Expr) bool {
			c, ok := e.(*ast.CallExpr)
			return ok && (isSel(c.Fun, execName, "Command") || isSel(c.Fun, execName, "CommandContext"))
		}
		held := map[ast.Node]bool{}    // exec calls assigned to a variable
		unset := map[string]ast.Node{} // variable -> its exec call, until its Env is set
		var order []string
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.AssignStmt:
				for i, rhs := range n.Rhs {
					if id, ok := n.Lhs[i].(*ast.Ident); ok && isExec(rhs) && i < len(n.Lhs) {
						held[rhs] = true
						unset[id.Name] = rhs
						order = append(order, id.Name)
					}
				}
				for i, lhs := range n.Lhs {
					s, ok := lhs.(*ast.SelectorExpr)
					if !ok || s.Sel.Name != "Env" || i >= len(n.Rhs) {
						continue
					}
					if id, ok := n.Rhs[i].(*ast.Ident); ok && id.Name == "nil" {
						at(n, "Env = nil passes the whole environment: use config.ChildEnv")
						continue
					}
					if id, ok := s.X.(*ast.Ident); ok {
						delete(unset, id.Name)
					}
				}
			case *ast.CallExpr:
				if isExec(n) && !held[n] {
					at(n, fn.Name.Name+" starts a child it never sets the Env of: hold it in a variable and set cmd.Env = config.ChildEnv(getenv, ...)")
				}
			case *ast.CompositeLit:
				if isSel(n.Type, execName, "Cmd") {
					hasEnv := false
					for _, el := range n.Elts {
						if kv, ok := el.(*ast.KeyValueExpr); ok {
							if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Env" {
								hasEnv = true
							}
						}
					}
					if !hasEnv {
						at(n, fn.Name.Name+" makes an exec.Cmd without Env: set Env: config.ChildEnv(getenv, ...)")
					}
				}
			}
			return true
		})
		for _, name := range order {
			if call, ok := unset[name]; ok {
				at(call, fn.Name.Name+" starts a child without setting its Env: set "+name+".Env = config.ChildEnv(getenv, ...)")
				delete(unset, name)
			}
		}
	}
	if !mayReadEnviron && mentionsEnviron(f) {
		ast.Inspect(f, func(n ast.Node) bool {
			if e, ok := n.(ast.Expr); ok && isSel(e, osName, "Environ") {
				at(n, "os.Environ outside cmd: take the environment from the caller (getenv) and give children config.ChildEnv")
			}
			return true
		})
	}
	return out
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Every child process the project starts gets an explicit environment
// from ChildEnv: none inherits os.Environ (with its IMAGE_BUILDER_SECRET_*,
// GITHUB_TOKEN and OS_* credentials).
func TestNoChildInheritsTheEnvironment(t *testing.T) {
	fset := token.NewFileSet()
	files := 0
	for _, root := range []string{"../../cmd", "../../internal"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			rel := filepath.ToSlash(strings.TrimPrefix(path, "../../"))
			if strings.HasPrefix(rel, "internal/testenv/") || strings.HasPrefix(rel, "internal/faultproxy/") {
				return nil // test infrastructure
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			files++
			for _, p := range execEnvProblems(fset, f, strings.HasPrefix(rel, "cmd/")) {
				t.Error(p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if files < 50 {
		t.Fatalf("only %d source files found: is the walk in the right place?", files)
	}
}

// The checker flags each way a child inherits the environment and passes
// the ways that give it ChildEnv.
func TestExecEnvProblemsFindsInheritance(t *testing.T) {
	src := `package p

import (
	"os"
	x "os/exec"
)

func bare() { _ = x.Command("a").Run() }
func ctx() { c := x.CommandContext(nil, "a"); _ = c.Run() }
func environ() { c := x.Command("a"); c.Env = append(os.Environ(), "A=b"); _ = c.Run() }
func nilEnv() { c := x.Command("a"); c.Env = nil; _ = c.Run() }
func two() { c := x.Command("a"); c.Env = env(); d := x.Command("b"); _, _ = c, d }
func lit() { _ = &x.Cmd{Path: "a"} }
func lambda() { f := func() { _ = x.Command("a").Run() }; f() }
func other() { var r struct{ Env []string }; c := x.Command("a"); r.Env = env(); _ = c.Run() }

func good() { c := x.Command("a"); c.Env = env(); _ = c.Run() }
func goodLit() { _ = &x.Cmd{Path: "a", Env: env()} }
func env() []string { return nil }
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	var funcs []string
	for _, p := range execEnvProblems(fset, f, false) {
		_, msg, _ := strings.Cut(p, ": ")
		funcs = append(funcs, strings.Fields(msg)[0])
	}
	want := []string{"bare", "ctx", "Env", "nilEnv", "two", "lit", "lambda", "other", "os.Environ"}
	if !slices.Equal(funcs, want) {
		t.Errorf("problems in %q, want %q", funcs, want)
	}
	if got := execEnvProblems(fset, f, true); len(got) != len(want)-1 {
		t.Errorf("with os.Environ allowed: %q", got)
	}
}
