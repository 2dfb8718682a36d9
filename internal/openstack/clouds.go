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
	"strconv"
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
	// AuthType is the entry's auth_type, one of SupportedAuthTypes ("" when
	// unset: password, or token when only a token is given).
	AuthType string
	// TLSUnverified names the setting that turned TLS certificate checks off
	// ("insecure: true" or "verify: false"); "" when they are done.
	TLSUnverified string
}

// SupportedAuthTypes are the clouds.yaml auth_type values Connect knows how
// to send; any other is refused rather than sent as password auth.
func SupportedAuthTypes() []string {
	return []string{"password", "v3password", "token", "v3token", "v3applicationcredential"}
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

// CheckCloud parses entry name of the clouds.yaml body data (label names it
// in errors) as LoadCloud would, without reading any file or connecting:
// `setup` uses it to refuse at install time what every build would refuse
// (an unsupported auth_type, a missing credential). Errors are LoadCloud's.
func CheckCloud(name, label string, data []byte) error {
	_, err := parseCloud(name, label, data, nil)
	return err
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
	cc := &CloudConfig{Name: name, Path: path, AuthOptions: ao, Endpoint: eo, TLS: tlsCfg}
	if err := applyEntrySettings(cc, data, secure); err != nil {
		return nil, err
	}
	return cc, nil
}

// entrySettings are the keys of a clouds.yaml entry that clouds.Parse
// ignores (auth_type, insecure) or that need a word (verify).
type entrySettings struct {
	AuthType *string `yaml:"auth_type"`
	Insecure *bool   `yaml:"insecure"`
	Verify   *bool   `yaml:"verify"`
}

// applyEntrySettings reads auth_type, insecure and verify of the entry
// (secure.yaml's win, as in clouds.Parse's merge) and applies them to cc:
// an unsupported auth_type is refused; auth_type keeps only its own
// credentials in AuthOptions, so that gophercloud cannot pick another
// method; insecure: true turns TLS checks off as the openstack CLI does
// (it wins over verify), and TLSUnverified records why they are off.
func applyEntrySettings(cc *CloudConfig, data, secure []byte) error {
	var set entrySettings
	for _, body := range [][]byte{data, secure} {
		node, err := cloudEntry(body, cc.Name)
		if err != nil || node == nil {
			continue // clouds.Parse read both bodies already; an entry-less secure.yaml is fine
		}
		var s entrySettings
		if err := node.Decode(&s); err != nil {
			return errs.New(errs.KindUsage, "cloud %q in %s: %s", cc.Name, cc.Path, redactYAMLError(err))
		}
		if s.AuthType != nil {
			set.AuthType = s.AuthType
		}
		if s.Insecure != nil {
			set.Insecure = s.Insecure
		}
		if s.Verify != nil {
			set.Verify = s.Verify
		}
	}
	if set.AuthType != nil {
		cc.AuthType = strings.TrimSpace(*set.AuthType)
	}
	if err := applyAuthType(&cc.AuthOptions, cc.AuthType); err != nil {
		return errs.New(errs.KindUsage, "cloud %q in %s: %s", cc.Name, cc.Path, err)
	}
	switch {
	case set.Insecure != nil && *set.Insecure:
		cc.TLSUnverified = "insecure: true"
	case set.Verify != nil && !*set.Verify:
		cc.TLSUnverified = "verify: false"
	}
	if cc.TLSUnverified != "" {
		if cc.TLS == nil {
			cc.TLS = &tls.Config{}
		}
		cc.TLS.InsecureSkipVerify = true
	}
	return nil
}

// applyAuthType checks t is supported and leaves in ao only the
// credentials of its method ("" leaves ao as it is: gophercloud sends a
// password when there is one, else a token, as the openstack CLI infers).
// The message names t and the supported values, never a credential.
func applyAuthType(ao *gophercloud.AuthOptions, t string) error {
	noAppCred := func() {
		ao.ApplicationCredentialID, ao.ApplicationCredentialName, ao.ApplicationCredentialSecret = "", "", ""
	}
	switch t {
	case "":
	case "password", "v3password":
		if ao.Password == "" {
			return fmt.Errorf("auth_type %s needs auth.password (in clouds.yaml or secure.yaml)", t)
		}
		ao.TokenID = ""
		noAppCred()
	case "token", "v3token":
		if ao.TokenID == "" {
			return fmt.Errorf("auth_type %s needs auth.token", t)
		}
		// Keystone takes no user with a token; gophercloud refuses one.
		ao.Password, ao.Username, ao.UserID, ao.DomainID, ao.DomainName = "", "", "", "", ""
		noAppCred()
	case "v3applicationcredential":
		if ao.ApplicationCredentialSecret == "" ||
			(ao.ApplicationCredentialID == "" && ao.ApplicationCredentialName == "") {
			return fmt.Errorf("auth_type %s needs auth.application_credential_secret and "+
				"auth.application_credential_id (or _name with the user)", t)
		}
		ao.Password, ao.TokenID = "", ""
	default:
		shown := "this value (hidden: it is not a plugin name)"
		if pluginName.MatchString(t) {
			shown = strconv.Quote(t)
		}
		return fmt.Errorf("auth_type %s is not supported; use one of %s",
			shown, strings.Join(SupportedAuthTypes(), ", "))
	}
	return nil
}

// pluginName is what a keystoneauth plugin name looks like (v3oidcpassword,
// admin_token): only such an auth_type is quoted in an error, so that a
// secret pasted into the wrong key is never shown.
var pluginName = regexp.MustCompile(`^[a-z0-9_]{1,40}$`)

// cloudEntry is the YAML node of entry name in a clouds.yaml or secure.yaml
// body (nil when the body has no such entry).
func cloudEntry(body []byte, name string) (*yaml.Node, error) {
	var doc struct {
		Clouds map[string]yaml.Node `yaml:"clouds"`
	}
	if err := yaml.Unmarshal(body, &doc); err != nil {
		return nil, err
	}
	n, ok := doc.Clouds[name]
	if !ok {
		return nil, nil
	}
	return &n, nil
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
