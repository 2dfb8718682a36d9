package openstack

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"go.yaml.in/yaml/v3"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// CloudsFileEnv names one clouds.yaml to use instead of the search path (as
// the openstack CLI does).
const CloudsFileEnv = "OS_CLIENT_CONFIG_FILE"

// CloudConfig is one parsed clouds.yaml entry. AuthOptions carries the
// password: never log or print it; LogValue shows only the harmless fields.
type CloudConfig struct {
	Name        string                  // the cloud's key in clouds.yaml
	Path        string                  // the clouds.yaml it came from
	AuthOptions gophercloud.AuthOptions // AllowReauth is always set
	Endpoint    gophercloud.EndpointOpts
	TLS         *tls.Config
}

// LogValue keeps secrets out of logs: only the name, file, auth URL and region.
func (c CloudConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("cloud", c.Name),
		slog.String("clouds_yaml", c.Path),
		slog.String("auth_url", c.AuthOptions.IdentityEndpoint),
		slog.String("region", c.Endpoint.Region),
	)
}

// String is LogValue's text, so that %v never prints the password either.
func (c CloudConfig) String() string {
	return fmt.Sprintf("cloud %q (%s, auth %s)", c.Name, c.Path, c.AuthOptions.IdentityEndpoint)
}

// CloudsPaths returns the clouds.yaml locations the openstack CLI tries, in
// order: $OS_CLIENT_CONFIG_FILE alone when set; otherwise ./clouds.yaml,
// ${XDG_CONFIG_HOME:-~/.config}/openstack/clouds.yaml and
// /etc/openstack/clouds.yaml. getenv is os.Getenv outside tests.
func CloudsPaths(getenv func(string) string) ([]string, error) {
	if p := getenv(CloudsFileEnv); p != "" {
		return []string{p}, nil
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("finding clouds.yaml: current directory: %w", err)
	}
	cfg := getenv("XDG_CONFIG_HOME")
	if cfg == "" {
		home := getenv("HOME")
		if home == "" {
			if home, err = os.UserHomeDir(); err != nil {
				return nil, fmt.Errorf("finding clouds.yaml: home directory: %w", err)
			}
		}
		cfg = filepath.Join(home, ".config")
	}
	return []string{
		filepath.Join(cwd, "clouds.yaml"),
		filepath.Join(cfg, "openstack", "clouds.yaml"),
		filepath.Join("/etc", "openstack", "clouds.yaml"),
	}, nil
}

// LoadCloud finds clouds.yaml on paths (see CloudsPaths), merges secure.yaml
// from the same directory, and returns the entry name. The first existing
// file wins, as with the openstack CLI.
//
// Errors: no name, or no clouds.yaml on any path, is errs.KindUsage (a
// configuration problem; the message lists the paths tried); a name the file
// does not define is errs.KindNotFound and lists the clouds it does define.
// No error ever quotes a value from the files, so a password cannot leak.
func LoadCloud(name string, paths []string) (*CloudConfig, error) {
	if name == "" {
		return nil, errs.Usage("no cloud named: pass --os-cloud or set OS_CLOUD to an entry of clouds.yaml")
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, errs.Wrap(errs.KindUsage, err, "reading %s", p)
		}
		secure, err := os.ReadFile(filepath.Join(filepath.Dir(p), "secure.yaml"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, errs.Wrap(errs.KindUsage, err, "reading secure.yaml beside %s", p)
		}
		cc, err := parseCloud(name, p, data, secure)
		if err != nil {
			return nil, err
		}
		return cc, nil
	}
	return nil, errs.Usage("no clouds.yaml found for cloud %q; tried %s (set %s to choose a file)",
		name, strings.Join(paths, ", "), CloudsFileEnv)
}

// parseCloud parses one clouds.yaml body (and optional secure.yaml body) with
// gophercloud's parser, after checking the entry exists so that the error can
// list what the file does define.
func parseCloud(name, path string, data, secure []byte) (*CloudConfig, error) {
	names, err := cloudNames(data)
	if err != nil {
		return nil, errs.Wrap(errs.KindUsage, err, "%s is not a valid clouds.yaml", path)
	}
	if !slices.Contains(names, name) {
		found := "none"
		if len(names) > 0 {
			found = strings.Join(names, ", ")
		}
		return nil, errs.New(errs.KindNotFound, "cloud %q is not in %s; clouds found: %s", name, path, found)
	}
	popts := []clouds.ParseOption{
		clouds.WithCloudName(name),
		clouds.WithCloudsYAML(bytes.NewReader(data)),
		// An empty secure.yaml keeps gophercloud from searching the disk itself.
		clouds.WithSecureYAML(bytes.NewReader(secureOrEmpty(secure))),
		// No profiles here: a clouds-public.yaml lookup would search other paths.
		clouds.WithCloudsPublicYAML(strings.NewReader("public-clouds: {}\n")),
	}
	ao, eo, tlsCfg, err := safeParse(popts)
	if err != nil {
		return nil, errs.New(errs.KindUsage, "cloud %q in %s: %s", name, path, redactYAMLError(err))
	}
	// clouds.Parse does not map allow_reauth; a build outlives a token (1 h by
	// default in Keystone), so re-authenticate always.
	ao.AllowReauth = true
	return &CloudConfig{Name: name, Path: path, AuthOptions: ao, Endpoint: eo, TLS: tlsCfg}, nil
}

// safeParse calls clouds.Parse, turning its panics (it dereferences a
// missing auth section) into an error.
func safeParse(popts []clouds.ParseOption) (ao gophercloud.AuthOptions, eo gophercloud.EndpointOpts, tlsCfg *tls.Config, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errors.New("the entry is incomplete (is its auth section missing?)")
		}
	}()
	return clouds.Parse(popts...)
}

func secureOrEmpty(b []byte) []byte {
	if len(bytes.TrimSpace(b)) == 0 {
		return []byte("clouds: {}\n")
	}
	return b
}

// cloudNames lists the entries of a clouds.yaml body, sorted.
func cloudNames(data []byte) ([]string, error) {
	var doc struct {
		Clouds map[string]yaml.Node `yaml:"clouds"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, errors.New(redactYAMLError(err))
	}
	names := make([]string, 0, len(doc.Clouds))
	for n := range doc.Clouds {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

// yamlLine finds the line numbers YAML errors give.
var yamlLine = regexp.MustCompile(`line \d+`)

// quoted matches quoted spans of an error text.
var quoted = regexp.MustCompile("`[^`]*`|\"[^\"]*\"|'[^']*'")

// redactYAMLError describes a parse error without quoting the input, so a
// mistyped password is never echoed. YAML errors quote values, tags and
// anchors in many ways, so for them only the line numbers are kept; other
// errors (a CA file that cannot be read...) keep their text minus quotes.
func redactYAMLError(err error) string {
	s := err.Error()
	if !strings.Contains(s, "yaml") {
		return strings.Join(strings.Fields(quoted.ReplaceAllString(s, "<redacted>")), " ")
	}
	lines := slices.Compact(yamlLine.FindAllString(s, 5))
	if len(lines) == 0 {
		return "invalid YAML (details hidden: they may quote a secret)"
	}
	return "invalid YAML or a value of the wrong type at " + strings.Join(lines, ", ") + " (details hidden: they may quote a secret)"
}
