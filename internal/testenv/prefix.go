package testenv

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/keypairs"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/users"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"github.com/runner-image-builder/github-runner-image-builder/internal/clock"
)

const (
	prefixAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	prefixRandLen  = 6
	// leakCheckTimeout bounds the whole end-of-test check, deletions included.
	leakCheckTimeout = 4 * time.Minute
	// deletingGrace is how long a server already being deleted may take to go.
	deletingGrace = 90 * time.Second
)

// Prefix returns a short resource-name prefix unique to this test, such as
// "it-k3x9qa", and registers a cleanup that fails the test for every server,
// port (see FindLeaks), image, keypair, security group and volume whose name
// starts with it in any
// project of the test OpenStack (listed as it-admin), then deletes them so a
// leak does not cascade into later tests. Name everything the test creates
// with the prefix. Call Require before Prefix.
func Prefix(t testing.TB) string {
	t.Helper()
	p := newPrefix()
	recordPrefix(p, t.Name())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), leakCheckTimeout)
		defer cancel()
		leaks, err := FindLeaks(ctx, p)
		if err != nil {
			t.Errorf("testenv: leak check for prefix %q: %v", p, err)
			return
		}
		for _, l := range leaks {
			t.Errorf("testenv: %s left behind %s", t.Name(), l)
		}
		if err := DeleteLeaks(ctx, leaks); err != nil {
			t.Errorf("testenv: deleting what %s left behind: %v", t.Name(), err)
		}
	})
	return p
}

// recordPrefix appends "<prefix>\t<test name>" to $GRIB_TEST_PREFIXES when
// set, so that .ci/run can name the test behind each guest boot (boots are
// recorded by server name, which starts with the prefix).
func recordPrefix(prefix, test string) {
	path := os.Getenv("GRIB_TEST_PREFIXES")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return // naming tests in the CI summary is a convenience
	}
	defer f.Close()
	_, _ = fmt.Fprintf(f, "%s\t%s\n", prefix, test)
}

// newPrefix returns "it-" and 6 random lower-case letters or digits.
func newPrefix() string {
	b := make([]byte, prefixRandLen)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("testenv: crypto/rand: %v", err)) // never fails on Linux
	}
	for i := range b {
		b[i] = prefixAlphabet[int(b[i])%len(prefixAlphabet)]
	}
	return "it-" + string(b)
}

// Leak is one resource whose name starts with a test's prefix.
type Leak struct {
	Kind    string // server, port, image, keypair, security group, volume
	Name    string
	ID      string
	Project string // project ID; for keypairs the owning user ID
}

func (l Leak) String() string {
	return fmt.Sprintf("%s %q (id %s, owner %s)", l.Kind, l.Name, l.ID, l.Project)
}

// FindLeaks lists, as it-admin across all projects, every server, image,
// keypair, security group and volume named with prefix, and every port of
// the prefix: named with it, attached to one of its servers or in one of its
// security groups (Nova names a server's ports nothing). A server that is
// already being deleted, and a port whose server is gone, are given a short
// grace to disappear first. Volumes are listed only when the cloud has a
// block-storage service.
func FindLeaks(ctx context.Context, prefix string) ([]Leak, error) {
	admin, err := Connect(ctx, AdminCloud)
	if err != nil {
		return nil, err
	}
	var leaks []Leak
	srv, err := leakedServers(ctx, admin, prefix)
	if err != nil {
		return nil, err
	}
	leaks = append(leaks, srv...)
	for _, find := range []func(context.Context, *Cloud, string) ([]Leak, error){
		leakedImages, leakedKeypairs, leakedSecurityGroups, leakedVolumes,
	} {
		found, err := find(ctx, admin, prefix)
		if err != nil {
			return nil, err
		}
		leaks = append(leaks, found...)
	}
	found, err := leakedPorts(ctx, admin, prefix, leaks)
	if err != nil {
		return nil, err
	}
	return append(leaks, found...), nil
}

// leakedPorts lists the ports of prefix: named with it, or whose device is
// one of the prefix's servers, or in one of its security groups (others is
// what FindLeaks found of the other kinds). A server's port that outlives
// its server (Nova unbinds and deletes it as the server goes) is given
// deletingGrace to go.
func leakedPorts(ctx context.Context, admin *Cloud, prefix string, others []Leak) ([]Leak, error) {
	servers, sgs := map[string]bool{}, map[string]bool{}
	for _, l := range others {
		switch l.Kind {
		case "server":
			servers[l.ID] = true
		case "security group":
			sgs[l.ID] = true
		}
	}
	deadline := time.Now().Add(deletingGrace)
	for {
		pages, err := ports.List(admin.Network, ports.ListOpts{}).AllPages(ctx)
		if err != nil {
			return nil, fmt.Errorf("list ports: %w", err)
		}
		all, err := ports.ExtractPorts(pages)
		if err != nil {
			return nil, fmt.Errorf("list ports: %w", err)
		}
		var leaks []Leak
		orphaned := false
		for _, p := range all {
			inGroup := slices.ContainsFunc(p.SecurityGroups, func(id string) bool { return sgs[id] })
			if !strings.HasPrefix(p.Name, prefix) && !servers[p.DeviceID] && !inGroup {
				continue
			}
			if strings.HasPrefix(p.DeviceOwner, "compute:") && !servers[p.DeviceID] {
				orphaned = true
			}
			name := p.Name
			if name == "" {
				name = "(unnamed, device " + p.DeviceID + ")"
			}
			leaks = append(leaks, Leak{Kind: "port", Name: name, ID: p.ID, Project: p.ProjectID})
		}
		if !orphaned || time.Now().After(deadline) {
			return leaks, nil
		}
		if err := clock.Sleep(ctx, 2*time.Second); err != nil {
			return nil, err
		}
	}
}

func leakedServers(ctx context.Context, admin *Cloud, prefix string) ([]Leak, error) {
	deadline := time.Now().Add(deletingGrace)
	for {
		pages, err := servers.List(admin.Compute, servers.ListOpts{
			AllTenants: true, Name: "^" + regexp.QuoteMeta(prefix),
		}).AllPages(ctx)
		if err != nil {
			return nil, fmt.Errorf("list servers: %w", err)
		}
		all, err := servers.ExtractServers(pages)
		if err != nil {
			return nil, fmt.Errorf("list servers: %w", err)
		}
		var leaks []Leak
		deleting := false
		for _, s := range all {
			if !strings.HasPrefix(s.Name, prefix) {
				continue
			}
			if s.TaskState == "deleting" || s.Status == "DELETED" {
				deleting = true
			}
			leaks = append(leaks, Leak{Kind: "server", Name: s.Name, ID: s.ID, Project: s.TenantID})
		}
		if !deleting || time.Now().After(deadline) {
			return leaks, nil
		}
		if err := clock.Sleep(ctx, 2*time.Second); err != nil {
			return nil, err
		}
	}
}

func leakedImages(ctx context.Context, admin *Cloud, prefix string) ([]Leak, error) {
	var leaks []Leak
	// Admin lists every project's images; hidden ones need their own listing.
	for _, hidden := range []bool{false, true} {
		pages, err := images.List(admin.Image, images.ListOpts{Hidden: hidden}).AllPages(ctx)
		if err != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		all, err := images.ExtractImages(pages)
		if err != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		for _, im := range all {
			if strings.HasPrefix(im.Name, prefix) {
				leaks = append(leaks, Leak{Kind: "image", Name: im.Name, ID: im.ID, Project: im.Owner})
			}
		}
	}
	return leaks, nil
}

func leakedKeypairs(ctx context.Context, admin *Cloud, prefix string) ([]Leak, error) {
	// Keypairs belong to users: list each user's (microversion >= 2.10).
	pages, err := users.List(admin.Identity, users.ListOpts{}).AllPages(ctx)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	all, err := users.ExtractUsers(pages)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	var leaks []Leak
	for _, u := range all {
		kpages, err := keypairs.List(admin.Compute, keypairs.ListOpts{UserID: u.ID}).AllPages(ctx)
		if err != nil {
			return nil, fmt.Errorf("list keypairs of user %s: %w", u.Name, err)
		}
		kps, err := keypairs.ExtractKeyPairs(kpages)
		if err != nil {
			return nil, fmt.Errorf("list keypairs of user %s: %w", u.Name, err)
		}
		for _, kp := range kps {
			if strings.HasPrefix(kp.Name, prefix) {
				leaks = append(leaks, Leak{Kind: "keypair", Name: kp.Name, ID: kp.Name, Project: u.ID})
			}
		}
	}
	return leaks, nil
}

func leakedSecurityGroups(ctx context.Context, admin *Cloud, prefix string) ([]Leak, error) {
	pages, err := groups.List(admin.Network, groups.ListOpts{}).AllPages(ctx)
	if err != nil {
		return nil, fmt.Errorf("list security groups: %w", err)
	}
	all, err := groups.ExtractGroups(pages)
	if err != nil {
		return nil, fmt.Errorf("list security groups: %w", err)
	}
	var leaks []Leak
	for _, g := range all {
		if strings.HasPrefix(g.Name, prefix) {
			leaks = append(leaks, Leak{Kind: "security group", Name: g.Name, ID: g.ID, Project: g.ProjectID})
		}
	}
	return leaks, nil
}

func leakedVolumes(ctx context.Context, admin *Cloud, prefix string) ([]Leak, error) {
	bs, err := volumeClient(admin)
	if err != nil || bs == nil {
		return nil, err
	}
	pages, err := volumes.List(bs, volumes.ListOpts{AllTenants: true}).AllPages(ctx)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	all, err := volumes.ExtractVolumes(pages)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	var leaks []Leak
	for _, v := range all {
		if strings.HasPrefix(v.Name, prefix) {
			leaks = append(leaks, Leak{Kind: "volume", Name: v.Name, ID: v.ID, Project: v.TenantID})
		}
	}
	return leaks, nil
}

// volumeClient returns nil, nil when the cloud has no block-storage service
// (the .ci stack has none).
func volumeClient(c *Cloud) (*gophercloud.ServiceClient, error) {
	bs, err := openstack.NewBlockStorageV3(c.Provider, c.endpoints)
	var notFound *gophercloud.ErrEndpointNotFound
	if errors.As(err, &notFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("block-storage endpoint: %w", err)
	}
	return bs, nil
}

// DeleteLeaks deletes leaks: servers first (waiting until they are gone, so
// their ports release security groups), then ports, then the rest.
func DeleteLeaks(ctx context.Context, leaks []Leak) error {
	if len(leaks) == 0 {
		return nil
	}
	admin, err := Connect(ctx, AdminCloud)
	if err != nil {
		return err
	}
	var errs []string
	fail := func(l Leak, err error) { errs = append(errs, fmt.Sprintf("%s: %v", l, err)) }
	for _, l := range leaks {
		if l.Kind != "server" {
			continue
		}
		if err := DeleteServer(ctx, admin.Compute, l.ID); err != nil {
			fail(l, err)
		}
	}
	for _, l := range leaks {
		if l.Kind != "port" {
			continue
		}
		if err := ports.Delete(ctx, admin.Network, l.ID).ExtractErr(); err != nil && !isNotFound(err) {
			fail(l, err)
		}
	}
	for _, l := range leaks {
		var err error
		switch l.Kind {
		case "image":
			err = images.Delete(ctx, admin.Image, l.ID).ExtractErr()
		case "keypair":
			err = keypairs.Delete(ctx, admin.Compute, l.Name, keypairs.DeleteOpts{UserID: l.Project}).ExtractErr()
		case "security group":
			err = groups.Delete(ctx, admin.Network, l.ID).ExtractErr()
		case "volume":
			var bs *gophercloud.ServiceClient
			if bs, err = volumeClient(admin); err == nil && bs != nil {
				err = volumes.Delete(ctx, bs, l.ID, volumes.DeleteOpts{Cascade: true}).ExtractErr()
			}
		}
		if err != nil && !isNotFound(err) {
			fail(l, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// DeleteServer deletes a server and waits until it is gone (404).
func DeleteServer(ctx context.Context, compute *gophercloud.ServiceClient, id string) error {
	if err := servers.Delete(ctx, compute, id).ExtractErr(); err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("delete server %s: %w", id, err)
	}
	for {
		_, err := servers.Get(ctx, compute, id).Extract()
		if isNotFound(err) {
			return nil
		}
		if err := clock.Sleep(ctx, time.Second); err != nil {
			return fmt.Errorf("server %s still there after delete: %w", id, err)
		}
	}
}

// WaitServer polls a server until it has status want. It fails at once when
// the server goes ERROR (quoting its fault) and when ctx ends.
func WaitServer(ctx context.Context, compute *gophercloud.ServiceClient, id, want string) (*servers.Server, error) {
	for {
		s, err := servers.Get(ctx, compute, id).Extract()
		if err != nil {
			return nil, fmt.Errorf("get server %s: %w", id, err)
		}
		if s.Status == want {
			return s, nil
		}
		if s.Status == "ERROR" && want != "ERROR" {
			return s, fmt.Errorf("server %s went ERROR waiting for %s: %s", id, want, s.Fault.Message)
		}
		if err := clock.Sleep(ctx, time.Second); err != nil {
			return s, fmt.Errorf("server %s is %s (task %q), waiting for %s: %w", id, s.Status, s.TaskState, want, err)
		}
	}
}
