package openstack

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

const testPassword = "Pa55-w0rd-never-shown"

const cloudsYAML = `clouds:
  build:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: builder
      project_name: ci
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
  upload:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: uploader
      password: ` + testPassword + `
      project_name: ci2
      user_domain_name: Default
      project_domain_name: Default
`

const secureYAML = `clouds:
  build:
    auth:
      password: ` + testPassword + `
`

func writeFile(t *testing.T, path, body string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCloudsPaths(t *testing.T) {
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"explicit file only", map[string]string{CloudsFileEnv: "/x/my.yaml", "HOME": "/home/u"}, []string{"/x/my.yaml"}},
		{"home", map[string]string{"HOME": "/home/u"},
			[]string{filepath.Join(cwd, "clouds.yaml"), "/home/u/.config/openstack/clouds.yaml", "/etc/openstack/clouds.yaml"}},
		{"xdg wins over home", map[string]string{"HOME": "/home/u", "XDG_CONFIG_HOME": "/cfg"},
			[]string{filepath.Join(cwd, "clouds.yaml"), "/cfg/openstack/clouds.yaml", "/etc/openstack/clouds.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CloudsPaths(func(k string) string { return tt.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("CloudsPaths = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLoadCloud(t *testing.T) {
	dir := t.TempDir()
	withSecure := writeFile(t, filepath.Join(dir, "a", "clouds.yaml"), cloudsYAML)
	writeFile(t, filepath.Join(dir, "a", "secure.yaml"), secureYAML)
	second := writeFile(t, filepath.Join(dir, "b", "clouds.yaml"), "clouds:\n  other: {auth: {auth_url: http://127.0.0.1:1/v3}}\n")
	badType := writeFile(t, filepath.Join(dir, "c", "clouds.yaml"),
		"clouds:\n  build:\n    auth: {auth_url: http://127.0.0.1:5000/v3, password: "+testPassword+"}\n    verify: "+testPassword+"\n")
	badSyntax := writeFile(t, filepath.Join(dir, "d", "clouds.yaml"), "clouds:\n  build: [\"password: "+testPassword+"\"\n")
	empty := writeFile(t, filepath.Join(dir, "e", "clouds.yaml"), "")
	missing := filepath.Join(dir, "nothing", "clouds.yaml")

	tests := []struct {
		name      string
		cloud     string
		paths     []string
		wantKind  errs.Kind
		wantInErr []string
		check     func(t *testing.T, c *CloudConfig)
	}{
		{name: "secure.yaml merged", cloud: "build", paths: []string{missing, withSecure, second},
			check: func(t *testing.T, c *CloudConfig) {
				if c.AuthOptions.Password != testPassword || c.AuthOptions.Username != "builder" {
					t.Errorf("auth = %q/%q, want builder and the secure.yaml password", c.AuthOptions.Username, c.AuthOptions.Password)
				}
				if !c.AuthOptions.AllowReauth {
					t.Error("AllowReauth not set")
				}
				if c.Endpoint.Region != "RegionOne" || c.Path != withSecure || c.Name != "build" {
					t.Errorf("got %+v", c)
				}
				if c.AuthOptions.Scope == nil || c.AuthOptions.Scope.ProjectName != "ci" {
					t.Errorf("scope = %+v, want project ci", c.AuthOptions.Scope)
				}
			}},
		{name: "first existing file wins", cloud: "other", paths: []string{withSecure, second},
			wantKind: errs.KindNotFound, wantInErr: []string{`cloud "other" is not in ` + withSecure, "clouds found: build, upload"}},
		{name: "no file", cloud: "build", paths: []string{missing, missing + "2"},
			wantKind: errs.KindUsage, wantInErr: []string{missing + ", " + missing + "2", CloudsFileEnv}},
		{name: "no name", cloud: "", paths: []string{withSecure},
			wantKind: errs.KindUsage, wantInErr: []string{"--os-cloud", "OS_CLOUD"}},
		{name: "empty file", cloud: "build", paths: []string{empty},
			wantKind: errs.KindNotFound, wantInErr: []string{"clouds found: none"}},
		{name: "wrong type never echoes the value", cloud: "build", paths: []string{badType},
			wantKind: errs.KindUsage, wantInErr: []string{badType}},
		{name: "bad syntax never echoes the value", cloud: "build", paths: []string{badSyntax},
			wantKind: errs.KindUsage, wantInErr: []string{"not a valid clouds.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadCloud(tt.cloud, tt.paths)
			if tt.check != nil {
				if err != nil {
					t.Fatal(err)
				}
				tt.check(t, c)
				for _, s := range []string{c.String(), c.LogValue().String()} {
					if strings.Contains(s, testPassword) {
						t.Errorf("password in %q", s)
					}
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadCloud succeeded, want a %v error", tt.wantKind)
			}
			if k := errs.KindOf(err); k != tt.wantKind {
				t.Errorf("kind = %v, want %v (%v)", k, tt.wantKind, err)
			}
			for _, s := range tt.wantInErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if strings.Contains(err.Error(), testPassword) {
				t.Errorf("error shows the password: %q", err)
			}
		})
	}
}

// FuzzParseCloud feeds arbitrary clouds.yaml bodies, with a password planted
// in the cloud being read, and checks parsing never panics and no error ever
// quotes the password.
func FuzzParseCloud(f *testing.F) {
	f.Add([]byte(cloudsYAML), []byte(secureYAML))
	f.Add([]byte("clouds: [1, 2"), []byte(""))
	f.Add([]byte("clouds:\n  x:\n    verify: SECRET\n"), []byte("clouds:\n  x:\n    auth: {password: [SECRET]}\n"))
	f.Fuzz(func(t *testing.T, body, secure []byte) {
		const secret = "Zq9-planted-secret"
		planted := []byte(strings.ReplaceAll(string(body), "SECRET", secret))
		plantedSecure := []byte(strings.ReplaceAll(string(secure), "SECRET", secret))
		names, _ := cloudNames(planted)
		for _, name := range append(names, "x") {
			_, err := parseCloud(name, "clouds.yaml", planted, plantedSecure)
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Fatalf("error shows the secret: %q", err)
			}
		}
	})
}
