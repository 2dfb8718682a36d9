package service

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service/install"
)

// Defaults of the service configuration.
const (
	DefaultInterval         = 6 * time.Hour
	DefaultBaseImageRefresh = 7 * 24 * time.Hour
	DefaultBuildTimeout     = 6 * time.Hour
	DefaultCallbackTimeout  = 5 * time.Minute
	DefaultListen           = "127.0.0.1:9180"
	DefaultRetryAttempts    = 5
	DefaultRetryMin         = 5 * time.Second
	DefaultRetryMax         = time.Minute
	maxConfigSize           = 1 << 20
)

// Config is a validated service configuration file: the build matrix and
// everything each build, the callbacks and the schedule need. It never
// holds a secret: secrets are named by SecretRef and read at build time.
type Config struct {
	Path string // the file it was read from (absolute)

	// Build holds the top level's settings, which every cell's build
	// starts from (Images may set some per cell), in the type
	// and with the rules of `run` (config.RunSpec); the per-cell fields
	// (ImageName, Arch, Base, Output, Protect, Secrets) are left empty and
	// filled by RunSpec.
	Build config.RunSpec

	CloudsFile string // the clouds.yaml builds use; "" = the usual search path
	Bases      []config.Base
	Arches     []config.Arch

	RunnerToken   *SecretRef // GitHub token for release look-ups, or nil
	ScriptSecrets map[string]SecretRef
	Images        []ImageSettings // per-image settings over Build (images.go)

	OutputDir string // local builder: <OutputDir>/<image name>.qcow2

	Parallelism   int // 0 = automatic: see parallel.go
	RetryAttempts int
	RetryMin      time.Duration
	RetryMax      time.Duration

	OnSuccess       []string // callback argv (the image IDs are appended)
	OnFailure       []string
	CallbackTimeout time.Duration
	LatestFile      string

	Interval         time.Duration
	CheckInterval    time.Duration // serve: how often to check whether a build is due
	BaseImageRefresh time.Duration // 0 = never (only setup seeds the base images)
	BuildTimeout     time.Duration
	BaseImageURL     string
	CacheDir         string // "" = the default cache
	StateDir         string // "" = the default state directory of Prefix
	TextfileDir      string // node_exporter textfile collector directory, or ""
	Listen           string
	// AllowRemote lets serve listen on an address other than loopback
	// (serve.allow_remote); without it such an address is refused.
	AllowRemote bool
}

// SecretRef says where a secret is read from: a file (its content, one
// trailing newline removed) or an environment variable. The value is never
// in the configuration.
type SecretRef struct {
	File string `yaml:"file"`
	Env  string `yaml:"env"`
}

func (r SecretRef) String() string {
	if r.File != "" {
		return "file " + r.File
	}
	return "environment variable " + r.Env
}

// Read returns the secret. A file must not be readable by others (0600 or
// 0640 and such): a looser one is refused rather than used.
func (r SecretRef) Read(getenv func(string) string) (config.Secret, error) {
	if r.Env != "" {
		v := getenv(r.Env)
		if v == "" {
			return "", errs.Usage("secret from environment variable %s: it is unset or empty", r.Env)
		}
		return config.Secret(v), nil
	}
	st, err := os.Stat(r.File)
	if err != nil {
		return "", errs.Wrap(errs.KindUsage, err, "secret file")
	}
	if st.Mode().Perm()&0o007 != 0 {
		return "", errs.Usage("secret file %s has mode %04o: others may read it; chmod o-rwx it", r.File, st.Mode().Perm())
	}
	data, err := os.ReadFile(r.File)
	if err != nil {
		return "", errs.Wrap(errs.KindUsage, err, "secret file")
	}
	v := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if v == "" {
		return "", errs.Usage("secret file %s is empty", r.File)
	}
	return config.Secret(v), nil
}

// UnmarshalYAML accepts {file: PATH} or {env: NAME} and nothing else; a
// plain value is refused without being quoted back (it may be the secret).
func (r *SecretRef) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return &lineError{line: n.Line, msg: "a secret is given as {file: PATH} or {env: NAME}, never as a value in the configuration"}
	}
	type plain SecretRef
	var p plain
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind != yaml.ScalarNode {
			return &lineError{line: v.Line, msg: fmt.Sprintf("secret %s: give a path or a variable name", k.Value)}
		}
		switch k.Value {
		case "file":
			p.File = v.Value
		case "env":
			p.Env = v.Value
		default:
			return &lineError{line: k.Line, msg: fmt.Sprintf("secret: unknown key %q (use file or env)", k.Value)}
		}
	}
	switch {
	case (p.File == "") == (p.Env == ""):
		return &lineError{line: n.Line, msg: "a secret needs exactly one of file or env"}
	case p.File != "" && !filepath.IsAbs(p.File):
		return &lineError{line: n.Line, msg: fmt.Sprintf("secret file %q: give an absolute path", p.File)}
	case p.Env != "" && !envNameRE.MatchString(p.Env):
		return &lineError{line: n.Line, msg: fmt.Sprintf("secret env %q: give a variable name", p.Env)}
	}
	*r = SecretRef(p)
	return nil
}

// checkSecretFiles reads every secret given as a file (mode and content
// checks), so that setup fails now rather than the first scheduled build.
func (c *Config) checkSecretFiles() error {
	for _, r := range c.secretRefs() {
		if r.File == "" {
			continue
		}
		if _, err := r.Read(nil); err != nil {
			return err
		}
	}
	return nil
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// duration is a YAML duration written as Go does: 90s, 30m, 6h, 1h30m.
type duration struct {
	d    time.Duration
	line int
	set  bool
}

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &lineError{line: n.Line, msg: "give a duration such as 30m or 6h"}
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil || v < 0 {
		return &lineError{line: n.Line, msg: fmt.Sprintf("%q is not a duration; write it with a unit, e.g. 30m or 6h", n.Value)}
	}
	*d = duration{d: v, line: n.Line, set: true}
	return nil
}

// command is an argv: a list of strings, or one string (a program alone).
type command []string

func (c *command) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*c = command{n.Value}
		return nil
	case yaml.SequenceNode:
		var out command
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return &lineError{line: item.Line, msg: "a command is a list of strings"}
			}
			out = append(out, item.Value)
		}
		*c = out
		return nil
	}
	return &lineError{line: n.Line, msg: "a command is a program path or a list: [program, arg...]"}
}

// lineError is an error at a line of the file.
type lineError struct {
	line int
	msg  string
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

// fileConfig is the file's shape; every key is optional unless Validate says.
type fileConfig struct {
	Builder      string           `yaml:"builder"`
	Cloud        string           `yaml:"cloud"`
	CloudsFile   string           `yaml:"clouds_file"`
	UploadClouds fileUploadClouds `yaml:"upload_clouds"` // names, or {name, disk_format}
	DiskFormat   string           `yaml:"disk_format"`
	ScratchDir   string           `yaml:"scratch_dir"`
	Prefix       string           `yaml:"prefix"`
	Matrix       struct {
		Bases  []string `yaml:"bases"`
		Arches []string `yaml:"arches"`
	} `yaml:"matrix"`
	Images fileImages `yaml:"images"` // per-image settings (images.go)

	Flavor        string `yaml:"flavor"`
	Network       string `yaml:"network"`
	KeepRevisions *int   `yaml:"keep_revisions"`
	Visibility    string `yaml:"visibility"`
	AdoptUnmarked bool   `yaml:"adopt_unmarked"`
	Runner        struct {
		Version string     `yaml:"version"`
		SHA256  string     `yaml:"sha256"`
		Repo    string     `yaml:"repo"`
		APIURL  string     `yaml:"api_url"`
		Token   *SecretRef `yaml:"token"`
	} `yaml:"runner"`
	Proxy  proxyConfig `yaml:"proxy"` // the guest's, and this host's (proxy.go)
	Script struct {
		URL     string               `yaml:"url"`
		Secrets map[string]SecretRef `yaml:"secrets"`
	} `yaml:"script"`
	SSHJump struct {
		Host       string `yaml:"host"`
		Key        string `yaml:"key"`
		KnownHosts string `yaml:"known_hosts"`
	} `yaml:"ssh_jump"`
	UserDataFile      string `yaml:"user_data_file"`
	VerifyScriptFile  string `yaml:"verify_script_file"`
	SkipDefaultChecks bool   `yaml:"skip_default_checks"`
	Timeouts          struct {
		Boot      duration `yaml:"boot"`
		SSH       duration `yaml:"ssh"`
		CloudInit duration `yaml:"cloud_init"`
		Script    duration `yaml:"script"`
		Snapshot  duration `yaml:"snapshot"`
		Copy      duration `yaml:"copy"`
	} `yaml:"timeouts"`
	InsecureSkipHostKeyCheck bool `yaml:"insecure_skip_host_key_check"`
	ZeroFreeSpace            bool `yaml:"zero_free_space"`
	Local                    struct {
		OutputDir string `yaml:"output_dir"`
		Isolated  bool   `yaml:"isolated"`
	} `yaml:"local"`
	Parallelism int `yaml:"parallelism"`
	Retry       struct {
		Attempts *int     `yaml:"attempts"`
		MinDelay duration `yaml:"min_delay"`
		MaxDelay duration `yaml:"max_delay"`
	} `yaml:"retry"`
	Callback struct {
		OnSuccess command  `yaml:"on_success"`
		OnFailure command  `yaml:"on_failure"`
		Timeout   duration `yaml:"timeout"`
	} `yaml:"callback"`
	LatestFile string `yaml:"latest_file"`
	Schedule   struct {
		Interval         duration `yaml:"interval"`
		CheckInterval    duration `yaml:"check_interval"`
		BaseImageRefresh duration `yaml:"base_image_refresh"`
		BuildTimeout     duration `yaml:"build_timeout"`
	} `yaml:"schedule"`
	BaseImageURL string `yaml:"base_image_url"`
	CacheDir     string `yaml:"cache_dir"`
	StateDir     string `yaml:"state_dir"`
	Metrics      struct {
		TextfileDir string `yaml:"textfile_dir"`
	} `yaml:"metrics"`
	Serve struct {
		Listen      string `yaml:"listen"`
		AllowRemote bool   `yaml:"allow_remote"`
	} `yaml:"serve"`
}

// LoadConfig reads and validates the configuration file at path.
func LoadConfig(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, errs.Wrap(errs.KindUsage, err, "--config %q", path)
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, errs.Wrap(errs.KindUsage, err, "--config")
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, errs.Wrap(errs.KindUsage, err, "--config %s", abs)
	}
	if len(data) > maxConfigSize {
		return nil, errs.Usage("--config %s: larger than %d KiB", abs, maxConfigSize>>10)
	}
	return ParseConfig(abs, data)
}

// ParseConfig parses and validates a configuration file's content; name is
// the file's path, used in messages ("name:LINE: ..."). Every error is a
// usage error naming the key and its line.
func ParseConfig(name string, data []byte) (*Config, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errs.Usage("%s: the configuration is empty", name)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(name, err)
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, errs.Usage("%s:%d: the configuration must be a mapping of keys (builder:, cloud:, matrix: ...)", name, max(root.Line, 1))
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var fc fileConfig
	if err := dec.Decode(&fc); err != nil {
		return nil, yamlError(name, err)
	}
	v := validator{name: name, root: root.Content[0]}
	c := v.convert(&fc)
	if v.err != nil {
		return nil, v.err
	}
	c.Path = name
	return c, nil
}

// yamlError turns a yaml.v3 error into a one-line usage error "name:LINE: ...".
func yamlError(name string, err error) error {
	var le *lineError
	if errors.As(err, &le) {
		return errs.Usage("%s:%d: %s", name, le.line, le.msg)
	}
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	// "line 3: field foo not found in type service.fileConfig" (or an
	// anonymous struct's whole definition)
	if m := unknownFieldRE.FindStringSubmatch(msg); m != nil {
		msg = m[1] + "unknown key " + m[2]
	}
	msg = typeNameRE.ReplaceAllString(msg, "")
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		return errs.Usage("%s:%s: %s", name, m[1], oneLine(m[2]))
	}
	return errs.Usage("%s: %s", name, oneLine(msg))
}

var (
	unknownFieldRE = regexp.MustCompile(`(?s)^(line \d+: )field (\S+) not found in type .*$`)
	typeNameRE     = regexp.MustCompile(` in type [A-Za-z0-9_.*\[\]]+`)
	lineRE         = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)
)

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// validator converts fileConfig to Config and keeps the first error, with
// the line of the key it concerns.
type validator struct {
	name string
	root *yaml.Node
	err  error
}

// fail records a usage error at the key path (e.g. "matrix", "bases", "1").
func (v *validator) fail(path string, format string, args ...any) {
	if v.err != nil {
		return
	}
	line := v.line(path)
	v.err = errs.Usage("%s:%d: %s: %s", v.name, line, path, fmt.Sprintf(format, args...))
}

// failErr records err (a usage error from internal/config) at path.
func (v *validator) failErr(path string, err error) {
	if err != nil {
		msg := err.Error()
		var e *errs.Error
		if errors.As(err, &e) && e.Msg != "" && e.Err == nil {
			msg = e.Msg
		}
		v.fail(path, "%s", msg)
	}
}

// line finds the line of a dotted key path ("runner.version", "matrix.bases.1").
func (v *validator) line(path string) int {
	n := v.root
	line := n.Line
	for _, part := range strings.Split(path, ".") {
		switch n.Kind {
		case yaml.MappingNode:
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == part {
					line, n, found = n.Content[i].Line, n.Content[i+1], true
					break
				}
			}
			if !found {
				return line
			}
		case yaml.SequenceNode:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(n.Content) {
				return line
			}
			n = n.Content[i]
			line = n.Line
		default:
			return line
		}
	}
	return line
}

func (v *validator) convert(fc *fileConfig) *Config {
	c := &Config{
		Build: config.RunSpec{
			Cloud: strings.TrimSpace(fc.Cloud), Prefix: fc.Prefix,
			Flavor: fc.Flavor, Network: fc.Network, AdoptUnmarked: fc.AdoptUnmarked,
			RunnerVersion: strings.TrimSpace(fc.Runner.Version), RunnerSHA256: strings.ToLower(strings.TrimSpace(fc.Runner.SHA256)),
			RunnerRepo: fc.Runner.Repo, RunnerAPIURL: fc.Runner.APIURL,
			Proxy: fc.Proxy.Guest, HostProxy: fc.Proxy.Host, ScriptURL: fc.Script.URL,
			UserDataFile: fc.UserDataFile, VerifyScriptFile: fc.VerifyScriptFile, SkipDefaultChecks: fc.SkipDefaultChecks,
			InsecureSkipHostKeyCheck: fc.InsecureSkipHostKeyCheck, ZeroFreeSpace: fc.ZeroFreeSpace, Isolated: fc.Local.Isolated,
			SSHJump: config.SSHJump{Host: fc.SSHJump.Host, Key: fc.SSHJump.Key, KnownHosts: fc.SSHJump.KnownHosts},
		},
		CloudsFile: fc.CloudsFile, RunnerToken: fc.Runner.Token, ScriptSecrets: fc.Script.Secrets,
		OutputDir:   fc.Local.OutputDir,
		Parallelism: fc.Parallelism,
		OnSuccess:   fc.Callback.OnSuccess, OnFailure: fc.Callback.OnFailure,
		LatestFile: fc.LatestFile, BaseImageURL: fc.BaseImageURL,
		CacheDir: fc.CacheDir, StateDir: fc.StateDir, TextfileDir: fc.Metrics.TextfileDir,
		Listen: fc.Serve.Listen, AllowRemote: fc.Serve.AllowRemote,
	}
	// The build settings are parsed here and checked by the rules every
	// build is checked by (v.settings); what is checked here is the
	// service's own: the matrix, paths, secrets, schedule, callbacks.
	var err error
	if fc.Builder == "" {
		c.Build.Builder = config.BuilderOpenStack
	} else if c.Build.Builder, err = config.ParseBuilder(fc.Builder); err != nil {
		v.failSetting(err)
	}
	if c.Build.Builder == config.BuilderLocal {
		if !filepath.IsAbs(c.OutputDir) {
			v.fail("local.output_dir", "required with builder local: an absolute directory for the qcow2 images")
		}
	} else if c.OutputDir != "" {
		v.fail("local.output_dir", "applies only to builder local")
	}
	v.checkPath("clouds_file", c.CloudsFile)
	c.Build.UploadClouds = fc.UploadClouds.names()
	c.Build.UploadDiskFormats = v.diskFormats("", fc.UploadClouds)
	if c.Build.DiskFormat, err = config.ParseDiskFormat("disk_format", 0, fc.DiskFormat); err != nil {
		v.failSetting(err)
	}
	c.Build.ScratchDir = fc.ScratchDir
	if c.Build.Prefix == "" {
		v.fail("prefix", "required: it names the images (<prefix>-<base>-<arch>) and every builder resource")
	}
	v.matrix(fc, c)
	v.images(fc.Images, c)
	c.Build.KeepRevisions = config.DefaultKeepRevisions
	if fc.KeepRevisions != nil {
		c.Build.KeepRevisions = *fc.KeepRevisions
	}
	c.Build.Visibility = config.VisibilityPrivate
	if fc.Visibility != "" {
		if c.Build.Visibility, err = config.ParseVisibility(fc.Visibility); err != nil {
			v.failSetting(err)
		}
	}
	v.runner(c)
	for name := range c.ScriptSecrets {
		if !envNameRE.MatchString(name) {
			v.fail("script.secrets."+name, "the secret's name must be a shell variable name (letters, digits, _)")
		}
	}
	v.checkPath("user_data_file", c.Build.UserDataFile)
	v.checkPath("verify_script_file", c.Build.VerifyScriptFile)
	v.checkPath("ssh_jump.key", c.Build.SSHJump.Key)
	v.checkPath("ssh_jump.known_hosts", c.Build.SSHJump.KnownHosts)
	v.timeouts(fc, c)
	v.retry(fc, c)
	if c.Parallelism < 0 || c.Parallelism > 64 {
		v.fail("parallelism", "%d: use 0 (automatic) or 1 to 64", c.Parallelism)
	}
	v.callbacks(fc, c)
	v.checkPath("latest_file", c.LatestFile)
	v.schedule(fc, c)
	v.failSetting(config.ValidateHTTPURL("base_image_url", c.BaseImageURL, true))
	v.checkPath("cache_dir", c.CacheDir)
	v.checkPath("state_dir", c.StateDir)
	v.checkPath("metrics.textfile_dir", c.TextfileDir)
	if c.Listen == "" {
		c.Listen = DefaultListen
	} else if host, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		v.fail("serve.listen", "%q: use host:port, e.g. %s", c.Listen, DefaultListen)
	} else if !c.AllowRemote && !loopbackHost(host) {
		v.fail("serve.listen", "%q is not a loopback address: set serve.allow_remote: true to let other hosts reach it", c.Listen)
	}
	v.settings(c)
	return c
}

// loopbackHost reports whether host, of a host:port to listen on, is
// loopback only: a loopback IP address or localhost. An empty host,
// 0.0.0.0 and :: are every interface; any other name may be anywhere.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// CheckListen applies serve.allow_remote's rule to addr, the host:port
// serve is to listen on (serve.listen, or the --listen flag): an address
// other than loopback needs serve.allow_remote: true.
func (c *Config) CheckListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return errs.Usage("%q: use host:port, e.g. %s", addr, DefaultListen)
	}
	if !c.AllowRemote && !loopbackHost(host) {
		return errs.Usage("%q is not a loopback address: set serve.allow_remote: true in %s to let other hosts reach it", addr, c.Path)
	}
	return nil
}

// settings checks every cell's build settings by the rules `run` is
// checked by, and reports a refused one at its key.
func (v *validator) settings(c *Config) {
	if v.err != nil {
		return
	}
	for ai, a := range c.Arches {
		for bi, b := range c.Bases {
			cell := Cell{Base: b, Arch: a, ImageName: config.ImageName(c.Build.Prefix, b, a)}
			err := c.specTemplate(cell, nil).Validate()
			if err == nil {
				continue
			}
			var se *config.SettingError
			i := c.imageIndex(cell)
			switch {
			case !errors.As(err, &se):
				v.failErr("prefix", err) // the image name, made of the prefix
			case i >= 0 && c.Images[i].imageSets(se.Setting): // the cell's own value
				v.failSettingAt("images."+strconv.Itoa(i)+".", err)
			case se.Setting == "arch":
				v.fail("matrix.arches."+strconv.Itoa(ai), "%s", se.Detail(config.KeyOf))
			case se.Setting == "base":
				v.fail("matrix.bases."+strconv.Itoa(bi), "%s", se.Detail(config.KeyOf))
			default:
				v.failSetting(err)
			}
			return
		}
	}
}

// diskFormats parses the per-cloud disk formats of an upload_clouds list
// (under prefix, e.g. "images.1."); nil when no item gives one.
func (v *validator) diskFormats(prefix string, l fileUploadClouds) map[string]config.DiskFormat {
	var out map[string]config.DiskFormat
	for i, u := range l {
		if u.DiskFormat == "" {
			continue
		}
		f, err := config.ParseDiskFormat("upload_disk_formats", i+1, u.DiskFormat)
		if err != nil {
			v.failSettingAt(prefix, err)
			continue
		}
		if out == nil {
			out = map[string]config.DiskFormat{}
		}
		out[u.Name] = f
	}
	return out
}

// failSetting records a refused build setting (a *config.SettingError) at
// its key, an item of a list at the item's line.
func (v *validator) failSetting(err error) { v.failSettingAt("", err) }

// failSettingAt is failSetting with the key under prefix (e.g. "images.1.").
func (v *validator) failSettingAt(prefix string, err error) {
	var se *config.SettingError
	if !errors.As(err, &se) {
		if err != nil && v.err == nil {
			v.err = errs.Wrap(errs.KindUsage, err, "%s", v.name)
		}
		return
	}
	key := prefix + config.KeyOf(se.Setting)
	switch {
	case se.Item > 0 && strings.Contains(key, ".*."): // a key of a list's items
		key = strings.Replace(key, ".*.", "."+strconv.Itoa(se.Item-1)+".", 1)
	case se.Item > 0:
		key += "." + strconv.Itoa(se.Item-1)
	}
	v.fail(key, "%s", se.Detail(config.KeyOf))
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// checkPath refuses a relative path: the scheduler's working directory is not the user's.
func (v *validator) checkPath(key, p string) {
	if p != "" && (!filepath.IsAbs(p) || strings.ContainsFunc(p, isControl)) {
		v.fail(key, "%q: give an absolute path (scheduled builds do not run in this directory)", p)
	}
}

func (v *validator) matrix(fc *fileConfig, c *Config) {
	if len(fc.Matrix.Arches) == 0 {
		v.fail("matrix.arches", "list at least one architecture, e.g. [x64]")
	}
	for i, s := range fc.Matrix.Arches {
		p := "matrix.arches." + strconv.Itoa(i)
		a, err := config.ParseArch(s)
		switch {
		case err != nil:
			v.failErr(p, err)
		case slices.Contains(c.Arches, a):
			v.fail(p, "%s is listed twice", a)
		}
		c.Arches = append(c.Arches, a)
	}
	bases := fc.Matrix.Bases
	if len(bases) == 0 {
		c.Bases = []config.Base{config.DefaultBase}
	}
	for i, s := range bases {
		p := "matrix.bases." + strconv.Itoa(i)
		b, err := config.ParseBase(s)
		switch {
		case err != nil:
			v.failErr(p, err)
		case slices.Contains(c.Bases, b):
			v.fail(p, "%s is listed twice", b)
		}
		c.Bases = append(c.Bases, b)
	}
	if c.Build.Builder == config.BuilderLocal && len(c.Arches) > 1 {
		v.fail("matrix.arches", "builder local builds only this host's architecture: list one")
	}
}

func (v *validator) runner(c *Config) {
	if c.Build.RunnerVersion == "latest" {
		c.Build.RunnerVersion = ""
	}
	if c.Build.RunnerSHA256 != "" && c.Build.RunnerVersion == "" {
		v.fail("runner.sha256", "pins one version's tarball: set runner.version too")
	}
	if c.Build.RunnerRepo == "" {
		c.Build.RunnerRepo = config.DefaultRunnerRepo
	}
	if c.Build.RunnerAPIURL == "" {
		c.Build.RunnerAPIURL = config.DefaultRunnerAPIURL
	}
}

func (v *validator) timeouts(fc *fileConfig, c *Config) {
	c.Build.Timeouts = config.DefaultTimeouts()
	t := &fc.Timeouts
	for _, f := range []struct {
		d   duration
		out *time.Duration
	}{
		{t.Boot, &c.Build.Timeouts.Boot}, {t.SSH, &c.Build.Timeouts.SSH},
		{t.CloudInit, &c.Build.Timeouts.CloudInit}, {t.Script, &c.Build.Timeouts.Script},
		{t.Snapshot, &c.Build.Timeouts.Snapshot}, {t.Copy, &c.Build.Timeouts.Copy},
	} {
		if f.d.set {
			*f.out = f.d.d
		}
	}
}

func (v *validator) retry(fc *fileConfig, c *Config) {
	c.RetryAttempts, c.RetryMin, c.RetryMax = DefaultRetryAttempts, DefaultRetryMin, DefaultRetryMax
	if fc.Retry.Attempts != nil {
		c.RetryAttempts = *fc.Retry.Attempts
		if c.RetryAttempts < 1 || c.RetryAttempts > 10 {
			v.fail("retry.attempts", "%d: use 1 (no retry) to 10", c.RetryAttempts)
		}
	}
	if fc.Retry.MinDelay.set {
		c.RetryMin = fc.Retry.MinDelay.d
	}
	if fc.Retry.MaxDelay.set {
		c.RetryMax = fc.Retry.MaxDelay.d
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin || c.RetryMax > time.Hour {
		v.fail("retry", "min_delay %s and max_delay %s: use 0 < min_delay <= max_delay <= 1h", c.RetryMin, c.RetryMax)
	}
}

func (v *validator) callbacks(fc *fileConfig, c *Config) {
	for _, cb := range []struct {
		key  string
		argv []string
	}{{"callback.on_success", c.OnSuccess}, {"callback.on_failure", c.OnFailure}} {
		if len(cb.argv) == 0 {
			continue
		}
		if !filepath.IsAbs(cb.argv[0]) {
			v.fail(cb.key, "%q: the program must be an absolute path", cb.argv[0])
		}
		for _, a := range cb.argv {
			if strings.ContainsRune(a, 0) {
				v.fail(cb.key, "an argument contains a NUL byte")
			}
		}
	}
	c.CallbackTimeout = DefaultCallbackTimeout
	if fc.Callback.Timeout.set {
		c.CallbackTimeout = fc.Callback.Timeout.d
		if c.CallbackTimeout <= 0 || c.CallbackTimeout > time.Hour {
			v.fail("callback.timeout", "%s: use a duration above 0 and at most 1h", c.CallbackTimeout)
		}
	}
}

func (v *validator) schedule(fc *fileConfig, c *Config) {
	s := &fc.Schedule
	c.Interval = DefaultInterval
	if s.Interval.set {
		c.Interval = s.Interval.d
		if err := install.ValidateInterval(c.Interval); err != nil {
			v.fail("schedule.interval", "%s", strings.TrimPrefix(err.Error(), "interval "))
		}
	}
	c.CheckInterval = min(time.Hour, c.Interval)
	if s.CheckInterval.set {
		c.CheckInterval = s.CheckInterval.d
		if c.CheckInterval < time.Minute || c.CheckInterval > c.Interval {
			v.fail("schedule.check_interval", "%s: use at least 1m and at most the interval (%s)", c.CheckInterval, c.Interval)
		}
	}
	c.BaseImageRefresh = DefaultBaseImageRefresh
	if s.BaseImageRefresh.set {
		c.BaseImageRefresh = s.BaseImageRefresh.d
		if c.BaseImageRefresh != 0 && c.BaseImageRefresh < time.Hour {
			v.fail("schedule.base_image_refresh", "%s: use 0 (never) or at least 1h", c.BaseImageRefresh)
		}
	}
	c.BuildTimeout = DefaultBuildTimeout
	if s.BuildTimeout.set {
		c.BuildTimeout = s.BuildTimeout.d
		if c.BuildTimeout < time.Minute || c.BuildTimeout > 48*time.Hour {
			v.fail("schedule.build_timeout", "%s: use 1m to 48h", c.BuildTimeout)
		}
	}
}
