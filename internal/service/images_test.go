package service

import (
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// A 2x2 matrix with top-level settings every cell inherits unless its
// images: entry sets its own. Line numbers matter to the error table.
const imagesBase = `cloud: builder
prefix: grib
upload_clouds: [c1]
matrix:
  bases: [jammy, noble]
  arches: [x64, arm64]
flavor: m1.small
network: net-a
keep_revisions: 4
script:
  url: https://example.com/top.sh
  secrets:
    TOP: {env: TOP_SECRET}
`

// What each cell's RunSpec gets: its entry's settings, the top level's
// for the rest, and the top level's everywhere for cells no entry names.
func TestImagesOverridesAndInheritance(t *testing.T) {
	type want struct {
		flavor, network, script string
		secrets                 []string
		clouds                  []string
		keep                    int
	}
	top := want{"m1.small", "net-a", "https://example.com/top.sh", []string{"TOP"}, []string{"c1"}, 4}
	tests := []struct {
		name   string
		images string
		want   map[string]want // image name → settings; cells not listed get top
	}{
		{"no images key: every cell as before", "", nil},
		{"one cell, every setting", `images:
  - base: noble
    arch: x64
    flavor: m1.large
    network: net-b
    upload_clouds: [c2, c3]
    keep_revisions: 2
    script:
      url: https://example.com/noble.sh
      secrets:
        NOBLE: {env: NOBLE_SECRET}
`, map[string]want{"grib-noble-x64": {"m1.large", "net-b", "https://example.com/noble.sh", []string{"NOBLE"}, []string{"c2", "c3"}, 2}}},
		{"base only names every arch", `images:
  - base: jammy
    flavor: m1.medium
`, map[string]want{
			"grib-jammy-x64":   {"m1.medium", "net-a", top.script, top.secrets, top.clouds, 4},
			"grib-jammy-arm64": {"m1.medium", "net-a", top.script, top.secrets, top.clouds, 4},
		}},
		{"arch only, empty script and clouds", `images:
  - arch: arm64
    script: {}
    upload_clouds: []
    flavor: ""
`, map[string]want{
			"grib-jammy-arm64": {"", "net-a", "", nil, []string{"builder"}, 4},
			"grib-noble-arm64": {"", "net-a", "", nil, []string{"builder"}, 4},
		}},
		{"two entries, two cells", `images:
  - {base: jammy, arch: x64, flavor: f-j}
  - {base: noble, arch: x64, flavor: f-n, script: {url: "https://example.com/n.sh"}}
`, map[string]want{
			"grib-jammy-x64": {"f-j", "net-a", top.script, top.secrets, top.clouds, 4},
			"grib-noble-x64": {"f-n", "net-a", "https://example.com/n.sh", nil, top.clouds, 4},
		}},
	}
	getenv := func(k string) string { return "value-of-" + k }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig("c.yaml", []byte(imagesBase+tt.images))
			if err != nil {
				t.Fatal(err)
			}
			for _, cell := range c.Cells() {
				w, ok := tt.want[cell.ImageName]
				if !ok {
					w = top
				}
				spec, err := c.RunSpec(cell, getenv, nil)
				if err != nil {
					t.Fatalf("%s: %v", cell.ImageName, err)
				}
				got := want{spec.Flavor, spec.Network, spec.ScriptURL, slices.Sorted(maps.Keys(spec.Secrets)), spec.PublishClouds(), spec.KeepRevisions}
				if len(got.secrets) == 0 {
					got.secrets = nil
				}
				if !reflect.DeepEqual(got, w) {
					t.Errorf("%s: got %+v, want %+v", cell.ImageName, got, w)
				}
				for name, v := range spec.Secrets {
					if v.Reveal() != "value-of-"+strings.ToUpper(name)+"_SECRET" {
						t.Errorf("%s: secret %s read from the wrong variable", cell.ImageName, name)
					}
				}
				if pc := c.PublishCloudsOf(cell); !reflect.DeepEqual(pc, w.clouds) {
					t.Errorf("%s: PublishCloudsOf %v, want %v", cell.ImageName, pc, w.clouds)
				}
			}
		})
	}
}

// disk_format in an entry sets its cells' copies' format over the top
// level's; a cell without one keeps the top level's, and an upload cloud's
// own format (upload_clouds: [{name, disk_format}]) stays its own.
func TestImagesDiskFormat(t *testing.T) {
	conf := strings.Replace(imagesBase, "upload_clouds: [c1]\n", "upload_clouds: [c1, {name: c2, disk_format: qcow2}]\ndisk_format: qcow2\n", 1) + `images:
  - base: noble
    disk_format: raw
`
	c, err := ParseConfig("c.yaml", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"grib-noble-x64": "raw", "grib-noble-arm64": "raw", "grib-jammy-x64": "qcow2", "grib-jammy-arm64": "qcow2"}
	for _, cell := range c.Cells() {
		spec, err := c.RunSpec(cell, func(string) string { return "x" }, nil)
		if err != nil {
			t.Fatalf("%s: %v", cell.ImageName, err)
		}
		if got := string(spec.DiskFormat); got != want[cell.ImageName] {
			t.Errorf("%s: disk format %q, want %q", cell.ImageName, got, want[cell.ImageName])
		}
		if got := spec.UploadDiskFormats["c2"]; got != "qcow2" {
			t.Errorf("%s: c2's own format %q, want qcow2 kept", cell.ImageName, got)
		}
	}
}

// A bad entry is reported with the file, the line and the entry's key
// (images.N.KEY), whether the service checks it or RunSpec.Validate does.
func TestImagesErrors(t *testing.T) {
	// imagesBase has 13 lines: "images:" is line 14, the first entry 15.
	tests := []struct {
		name, images, want string
	}{
		{"keep 0 in a cell", "images:\n  - base: noble\n    keep_revisions: 0\n",
			"c.yaml:16: images.0.keep_revisions: 0: keep from 1 to 99 revisions"},
		{"second entry's flavor", "images:\n  - {base: jammy, flavor: ok}\n  - base: noble\n    flavor: \" big \"\n",
			`c.yaml:17: images.1.flavor: " big ": give a flavor name or ID without spaces around it`},
		{"network", "images:\n  - arch: x64\n    network: \"a\\tb\"\n",
			`c.yaml:16: images.0.network: "a\tb": give a network name or ID`},
		{"script url", "images:\n  - base: noble\n    script:\n      url: ftp://x/s.sh\n",
			`c.yaml:17: images.0.script.url: "ftp://x/s.sh": use an http:// or https:// URL`},
		{"upload cloud listed twice", "images:\n  - base: noble\n    upload_clouds:\n      - a\n      - a\n",
			`c.yaml:18: images.0.upload_clouds.1: cloud "a" is listed twice`},
		{"disk format", "images:\n  - base: noble\n    disk_format: vmdk\n",
			`c.yaml:16: images.0.disk_format: "vmdk": use qcow2 or raw`},
		{"unknown key", "images:\n  - base: noble\n    flavour: big\n",
			"c.yaml:16: images.0: unknown key flavour (an entry sets base, arch, flavor"},
		{"wrong type", "images:\n  - base: noble\n    keep_revisions: many\n",
			"c.yaml:16: images.0: cannot unmarshal"},
		{"secret as a value", "images:\n  - base: noble\n    script:\n      secrets:\n        A: hunter2\n",
			"c.yaml:18: images.0: a secret is given as {file: PATH} or {env: NAME}"},
		{"secret name", "images:\n  - base: noble\n    script:\n      secrets:\n        a-b: {env: X}\n",
			"c.yaml:18: images.0.script.secrets.a-b: the secret's name must be a shell variable name"},
		{"base not in the matrix", "images:\n  - base: focal\n", "c.yaml:15: images.0.base: focal is not in matrix.bases"},
		{"unknown base", "images:\n  - base: xenial\n", "c.yaml:15: images.0.base: "},
		{"arch not in the matrix", "images:\n  - {arch: s390x}\n", "c.yaml:15: images.0.arch: s390x is not in matrix.arches"},
		{"two entries, one cell", "images:\n  - base: noble\n  - arch: x64\n",
			"c.yaml:16: images.1: names grib-noble-x64 as images.0 does: give each image's settings in one entry"},
		{"not a list", "images: {base: noble}\n", "c.yaml:14: images: a list of entries"},
		{"entry not a mapping", "images:\n  - noble\n", "c.yaml:15: images.0: an entry is a mapping"},
		// The top level's bad value is still reported at the top level.
		{"top-level keep", "images:\n  - {base: noble, flavor: x}\n", "c.yaml:9: keep_revisions: 0: keep from 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := imagesBase + tt.images
			if tt.name == "top-level keep" {
				data = strings.Replace(data, "keep_revisions: 4", "keep_revisions: 0", 1)
			}
			_, err := ParseConfig("c.yaml", []byte(data))
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if !errs.Is(err, errs.KindUsage) {
				t.Errorf("kind %v, want usage", errs.KindOf(err))
			}
			if msg := err.Error(); !strings.HasPrefix(msg, tt.want) || strings.Contains(msg, "\n") || strings.Contains(msg, "hunter2") {
				t.Errorf("error\n %q\nwant one line starting\n %q", msg, tt.want)
			}
		})
	}
}

// setup's clouds.yaml check wants every cloud an entry publishes to, and
// the callbacks' environment drops the variables an entry's secrets name.
func TestImagesCloudsAndSecretsReachSetupAndCallbacks(t *testing.T) {
	c, err := ParseConfig("c.yaml", []byte(imagesBase+`images:
  - base: noble
    upload_clouds: [c1, c9]
    script: {url: "https://example.com/n.sh", secrets: {N: {env: CELL_SECRET}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.AllClouds(), []string{"builder", "c1", "c9"}; !reflect.DeepEqual(got, want) {
		t.Errorf("AllClouds %v, want %v", got, want)
	}
	cloud := func(n string) string { return "  " + n + ":\n    auth: {auth_url: 'http://127.0.0.1:5000/v3'}\n" }
	err = checkClouds([]byte("clouds:\n"+cloud("builder")+cloud("c1")), c)
	if err == nil || !strings.Contains(err.Error(), `names cloud "c9", which it does not define`) {
		t.Errorf("checkClouds without c9: %v", err)
	}
	// setup reads an entry's secret files too (this one does not exist).
	f, err := ParseConfig("c.yaml", []byte(imagesBase+"images:\n  - {base: noble, script: {secrets: {F: {file: /nonexistent/grib-secret}}}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.checkSecretFiles(); err == nil || !strings.Contains(err.Error(), "/nonexistent/grib-secret") {
		t.Errorf("checkSecretFiles: %v, want the entry's missing secret file named", err)
	}
	env := map[string]string{"PATH": "/usr/bin", "CELL_SECRET": "s1", "TOP_SECRET": "s2"}
	for _, kv := range c.callbackEnv(func(k string) string { return env[k] }) {
		if strings.Contains(kv, "SECRET") {
			t.Errorf("callback environment has %s", kv)
		}
	}
}

// A build of two cells whose entries give different scripts, secrets and
// flavors hands each cell's builder its own; images are recorded in each
// cell's own publish clouds.
func TestBuildCellsWithOwnSettings(t *testing.T) {
	cfg := testConfig(t, `images:
  - base: jammy
    flavor: f-jammy
    script: {url: "https://127.0.0.1/jammy.sh", secrets: {J: {env: J_SECRET}}}
  - base: noble
    flavor: f-noble
    upload_clouds: [c3]
    script: {url: "https://127.0.0.1/noble.sh"}
`)
	s, b, _, _ := testService(t, cfg)
	s.Environ = append(s.Environ, "J_SECRET=jay")
	rep, err := s.Build(t.Context(), BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, sp := range b.specs() {
		got[sp.ImageName] = strings.Join([]string{sp.Flavor, sp.ScriptURL, strings.Join(sp.SecretNames(), ","), strings.Join(sp.PublishClouds(), ",")}, " ")
	}
	want := map[string]string{
		"grib-jammy-x64": "f-jammy https://127.0.0.1/jammy.sh J c1,c2",
		"grib-noble-x64": "f-noble https://127.0.0.1/noble.sh  c3",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("builders got %q, want %q", got, want)
	}
	for _, cr := range rep.Cells {
		var clouds []string
		for _, im := range cr.Images {
			clouds = append(clouds, im.Cloud)
		}
		if w := cfg.PublishCloudsOf(cr.Cell); !reflect.DeepEqual(clouds, w) || cr.Err != nil {
			t.Errorf("%s: images in %v (err %v), want %v", cr.ImageName, clouds, cr.Err, w)
		}
	}
	// latest finds each cell's image in its own clouds only.
	imgs, err := s.Latest(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var where []string
	for _, im := range imgs {
		where = append(where, im.ImageName+"@"+im.Cloud)
	}
	if w := []string{"grib-jammy-x64@c1", "grib-jammy-x64@c2", "grib-noble-x64@c3"}; !reflect.DeepEqual(where, w) {
		t.Errorf("latest %v, want %v", where, w)
	}
	// --if-due: each image is found in its own clouds, so neither is due.
	due, err := s.Due(t.Context(), cfg.Cells())
	if err != nil {
		t.Fatal(err)
	}
	if w := map[string]string{"grib-jammy-x64": "", "grib-noble-x64": ""}; !reflect.DeepEqual(due, w) {
		t.Errorf("due %q, want none", due)
	}
}

// The README's example images: entry gives grib-noble-x64 its own flavor,
// keep_revisions and script, and grib-jammy-x64 the top level's.
func TestReadmeImagesExample(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, _ := strings.Cut(string(data), "<!-- service-config:begin -->\n```yaml\n")
	block, _, _ = strings.Cut(block, "```\n<!-- service-config:end -->")
	c, err := ParseConfig("README.md", []byte(block))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, cell := range c.Cells() {
		s := c.specTemplate(cell, nil)
		got = append(got, fmt.Sprintf("%s %q %d %s %v", cell.ImageName, s.Flavor, s.KeepRevisions, s.ScriptURL, slices.Sorted(maps.Keys(c.scriptSecrets(cell)))))
	}
	want := []string{
		`grib-jammy-x64 "" 5 https://example.com/setup.sh [REGISTRY_TOKEN]`,
		`grib-noble-x64 "m1.large" 3 https://example.com/noble-setup.sh []`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("README example:\n got %q\nwant %q", got, want)
	}
}
