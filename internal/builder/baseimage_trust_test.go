package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
)

const testBaseSHA256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// initProperties are the properties init gives the base image of prefix
// uploaded from data, for tests that upload it themselves.
func initProperties(prefix string, data []byte) map[string]string {
	sum := sha256.Sum256(data)
	return map[string]string{PropPrefix: prefix, PropBaseSHA256: hex.EncodeToString(sum[:])}
}

// storeBase stores the base image of prefix as init uploads it: owned by
// c's project, with the prefix marker and the file's SHA-256.
func storeBase(c *fakeCloud, prefix string) *openstack.Image {
	return c.store(config.BaseImageName(prefix, config.BaseNoble, config.ArchX64), "qcow2",
		map[string]string{PropPrefix: prefix, PropBaseSHA256: testBaseSHA256}, []byte("base"))
}

func TestPickBaseImage(t *testing.T) {
	ours := func(id string) openstack.Image {
		return openstack.Image{ID: id, Owner: "proj", Visibility: "private",
			Properties: map[string]string{PropPrefix: "p", PropBaseSHA256: testBaseSHA256}}
	}
	with := func(im openstack.Image, change func(*openstack.Image)) openstack.Image {
		im.Properties = map[string]string{PropPrefix: im.Properties[PropPrefix], PropBaseSHA256: im.Properties[PropBaseSHA256]}
		change(&im)
		return im
	}
	public := with(ours("pub"), func(im *openstack.Image) { im.Owner, im.Visibility = "admin-proj", "public" })
	shared := with(ours("shr"), func(im *openstack.Image) { im.Owner, im.Visibility = "other-proj", "shared" })
	byHand := with(ours("hand"), func(im *openstack.Image) { delete(im.Properties, PropPrefix); delete(im.Properties, PropBaseSHA256) })
	otherPrefix := with(ours("pfx"), func(im *openstack.Image) { im.Properties[PropPrefix] = "q" })
	badSum := with(ours("sum"), func(im *openstack.Image) { im.Properties[PropBaseSHA256] = strings.ToUpper(testBaseSHA256) })
	noSum := with(ours("nosum"), func(im *openstack.Image) { delete(im.Properties, PropBaseSHA256) })
	tests := []struct {
		name    string
		project string
		ims     []openstack.Image
		want    string   // the picked ID, "" for none
		refused []string // the refused IDs, in order
	}{
		{"only ours", "proj", []openstack.Image{ours("a")}, "a", nil},
		{"newest of ours", "proj", []openstack.Image{ours("new"), ours("old")}, "new", nil},
		{"a newer public image is skipped", "proj", []openstack.Image{public, ours("a")}, "a", []string{"pub"}},
		{"only a public image", "proj", []openstack.Image{public}, "", []string{"pub"}},
		{"only a shared image", "proj", []openstack.Image{shared}, "", []string{"shr"}},
		{"ours uploaded by hand", "proj", []openstack.Image{byHand}, "", []string{"hand"}},
		{"another prefix's marker", "proj", []openstack.Image{otherPrefix}, "", []string{"pfx"}},
		{"a malformed SHA-256", "proj", []openstack.Image{badSum}, "", []string{"sum"}},
		{"no SHA-256", "proj", []openstack.Image{noSum}, "", []string{"nosum"}},
		{"unknown project", "", []openstack.Image{ours("a")}, "", []string{"a"}},
		{"none", "proj", nil, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, refused := PickBaseImage(tt.ims, tt.project, "p")
			gotID := ""
			if got != nil {
				gotID = got.ID
			}
			var refusedIDs []string
			for _, r := range refused {
				refusedIDs = append(refusedIDs, r.Image.ID)
				if r.Why == "" {
					t.Errorf("refused %s without a reason", r.Image.ID)
				}
			}
			if gotID != tt.want || !slices.Equal(refusedIDs, tt.refused) {
				t.Errorf("picked %q, refused %v; want %q, %v", gotID, refusedIDs, tt.want, tt.refused)
			}
		})
	}
}

// A run whose only base image of the right name belongs to another project
// fails before creating a server, with an error naming the image and its
// owner.
func TestRunRefusesForeignBaseImage(t *testing.T) {
	build := newFakeCloud("build")
	foreign := storeBase(build, "p")
	build.mu.Lock()
	foreign.Owner, foreign.Visibility = "proj-attacker", "public"
	build.mu.Unlock()
	o := testOpenStack(t, build)
	_, err := o.Build(context.Background(), nil, testJob(t, testSpec(t, nil), nil))
	if !errs.Is(err, errs.KindNotFound) || !strings.Contains(err.Error(), foreign.ID) || !strings.Contains(err.Error(), "proj-attacker") {
		t.Fatalf("err = %v, want not-found naming image %s and owner proj-attacker", err, foreign.ID)
	}
	if slices.Contains(build.calls, "CreateServer") {
		t.Error("a server was created from another project's image")
	}
}
