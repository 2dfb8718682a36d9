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
	f.Add([]byte("clouds:\n  x:\n    auth_type: SECRET\n    insecure: true\n    auth: {auth_url: http://127.0.0.1:1/v3}\n"),
		[]byte("clouds:\n  x:\n    insecure: SECRET\n"))
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

// TestLoadCloudEntrySettings covers the keys clouds.Parse ignores or
// applies without a word: auth_type (refused unless supported, and then
// the only method left in AuthOptions), insecure and verify (TLS checks
// off, and why).
func TestLoadCloudEntrySettings(t *testing.T) {
	const auth = "    auth:\n      auth_url: http://127.0.0.1:5000/v3\n      username: u\n      password: " + testPassword +
		"\n      project_name: ci\n      user_domain_name: Default\n      project_domain_name: Default\n"
	tests := []struct {
		name      string
		entry     string // the entry's keys besides auth
		authExtra string // more keys of auth
		secure    string // secure.yaml body ("" none)
		wantErr   []string
		check     func(t *testing.T, c *CloudConfig)
	}{
		{name: "defaults: password, TLS checked", check: func(t *testing.T, c *CloudConfig) {
			if c.AuthType != "" || c.TLSUnverified != "" || (c.TLS != nil && c.TLS.InsecureSkipVerify) {
				t.Errorf("auth type %q, unverified %q, TLS %+v", c.AuthType, c.TLSUnverified, c.TLS)
			}
		}},
		{name: "insecure true", entry: "insecure: true", check: unverified("insecure: true")},
		{name: "insecure true wins over verify true", entry: "insecure: true\n    verify: true", check: unverified("insecure: true")},
		{name: "insecure false keeps checks", entry: "insecure: false", check: unverified("")},
		{name: "verify false", entry: "verify: false", check: unverified("verify: false")},
		{name: "verify false, insecure false", entry: "verify: false\n    insecure: false", check: unverified("verify: false")},
		{name: "insecure from secure.yaml", secure: "clouds:\n  c:\n    insecure: true\n", check: unverified("insecure: true")},
		{name: "insecure not a bool", entry: "insecure: " + testPassword, wantErr: []string{`cloud "c"`, "line"}},
		{name: "unsupported auth_type named", entry: "auth_type: v3oidcpassword",
			wantErr: []string{`cloud "c"`, `auth_type "v3oidcpassword" is not supported`, strings.Join(SupportedAuthTypes(), ", ")}},
		{name: "v2password refused", entry: "auth_type: v2password", wantErr: []string{`auth_type "v2password" is not supported`}},
		{name: "auth_type not a plugin name is not quoted", entry: "auth_type: " + testPassword,
			wantErr: []string{"auth_type this value (hidden"}},
		{name: "auth_type from secure.yaml", secure: "clouds:\n  c:\n    auth_type: v3samlpassword\n",
			wantErr: []string{`auth_type "v3samlpassword" is not supported`}},
		{name: "password drops other credentials", entry: "auth_type: password", authExtra: "      token: tok\n      application_credential_id: ac\n",
			check: func(t *testing.T, c *CloudConfig) {
				ao := c.AuthOptions
				if ao.Password != testPassword || ao.TokenID != "" || ao.ApplicationCredentialID != "" || c.AuthType != "password" {
					t.Errorf("auth options %+v", ao)
				}
			}},
		{name: "token drops the password and user", entry: "auth_type: v3token", authExtra: "      token: tok\n",
			check: func(t *testing.T, c *CloudConfig) {
				ao := c.AuthOptions
				if ao.TokenID != "tok" || ao.Password != "" || ao.Username != "" || ao.DomainName != "" {
					t.Errorf("auth options %+v", ao)
				}
			}},
		{name: "token without a token", entry: "auth_type: token", wantErr: []string{"auth_type token needs auth.token"}},
		{name: "application credential drops the password", entry: "auth_type: v3applicationcredential",
			authExtra: "      application_credential_id: ac\n      application_credential_secret: s3\n",
			check: func(t *testing.T, c *CloudConfig) {
				ao := c.AuthOptions
				if ao.ApplicationCredentialID != "ac" || ao.ApplicationCredentialSecret != "s3" || ao.Password != "" {
					t.Errorf("auth options %+v", ao)
				}
			}},
		{name: "application credential without a secret", entry: "auth_type: v3applicationcredential",
			authExtra: "      application_credential_id: ac\n", wantErr: []string{"application_credential_secret"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := writeFile(t, filepath.Join(dir, "clouds.yaml"), "clouds:\n  c:\n"+auth+tt.authExtra+"    "+tt.entry+"\n")
			if tt.secure != "" {
				writeFile(t, filepath.Join(dir, "secure.yaml"), tt.secure)
			}
			c, err := LoadCloud("c", []string{p})
			if tt.check != nil {
				if err != nil {
					t.Fatal(err)
				}
				tt.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("LoadCloud succeeded, want an error with %q", tt.wantErr)
			}
			if errs.KindOf(err) != errs.KindUsage {
				t.Errorf("kind %v, want usage (%v)", errs.KindOf(err), err)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if strings.Contains(err.Error(), testPassword) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error shows the password or is not one line: %q", err)
			}
		})
	}
}

// unverified checks TLS checks are off because of setting why ("": on).
func unverified(why string) func(t *testing.T, c *CloudConfig) {
	return func(t *testing.T, c *CloudConfig) {
		t.Helper()
		off := c.TLS != nil && c.TLS.InsecureSkipVerify
		if c.TLSUnverified != why || off != (why != "") {
			t.Errorf("TLSUnverified %q, InsecureSkipVerify %v; want %q", c.TLSUnverified, off, why)
		}
	}
}
