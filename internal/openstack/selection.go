package openstack

import (
	"cmp"
	"context"
	"slices"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// The builder's minimum flavor (inventory §1.5, the Python tool's MIN_CPU,
// MIN_RAM and MIN_DISK).
const (
	MinVCPUs   = 2
	MinRAMMiB  = 1024
	MinDiskGiB = 20
)

// Selection picks the builder's flavor and network.
type Selection interface {
	SelectFlavor(ctx context.Context, nameOrID string) (*Flavor, error)
	SelectNetwork(ctx context.Context, nameOrID string) (*Network, error)
}

// Flavor is a Nova flavor's size.
type Flavor struct {
	ID      string
	Name    string
	VCPUs   int
	RAMMiB  int
	DiskGiB int
}

func (f Flavor) meetsMinimum() bool {
	return f.VCPUs >= MinVCPUs && f.RAMMiB >= MinRAMMiB && f.DiskGiB >= MinDiskGiB
}

// Network is a Neutron network with the subnets the project sees.
type Network struct {
	ID        string
	Name      string
	ProjectID string
	Shared    bool
	External  bool
	Subnets   []Subnet
}

// Subnet is a Neutron subnet.
type Subnet struct {
	ID        string
	NetworkID string
	IPVersion int
	CIDR      string
}

// SelectFlavor returns the flavor named or with the ID nameOrID, which must
// meet the minimum (2 vCPU, 1024 MiB, 20 GiB); when nameOrID is empty, the
// smallest flavor meeting it, by (vCPUs, RAM, disk) then name and ID.
func (c *Cloud) SelectFlavor(ctx context.Context, nameOrID string) (*Flavor, error) {
	var all []Flavor
	err := Retry(ctx, c.log, "list flavors", func(ctx context.Context) error {
		pages, err := flavors.ListDetail(c.compute, flavors.ListOpts{}).AllPages(ctx)
		if err != nil {
			return err
		}
		fs, err := flavors.ExtractFlavors(pages)
		all = all[:0]
		for _, f := range fs {
			all = append(all, Flavor{ID: f.ID, Name: f.Name, VCPUs: f.VCPUs, RAMMiB: f.RAM, DiskGiB: f.Disk})
		}
		return err
	})
	if err != nil {
		return nil, classify(err, "list flavors")
	}
	if nameOrID != "" && !slices.ContainsFunc(all, func(f Flavor) bool { return f.ID == nameOrID || f.Name == nameOrID }) {
		// A private flavor shared with the project may be missing from the list.
		if f, err := flavors.Get(ctx, c.compute, nameOrID).Extract(); err == nil {
			all = append(all, Flavor{ID: f.ID, Name: f.Name, VCPUs: f.VCPUs, RAMMiB: f.RAM, DiskGiB: f.Disk})
		}
	}
	f, err := pickFlavor(all, nameOrID)
	if err == nil {
		c.log.Debug("flavor selected", "flavor", f.Name, "id", f.ID)
	}
	return f, err
}

// pickFlavor applies the Python tool's flavor rule to a list, made
// deterministic. Names are compared exactly (no case folding).
func pickFlavor(all []Flavor, nameOrID string) (*Flavor, error) {
	if nameOrID != "" {
		f, err := findByIDOrName(all, nameOrID, "flavor", func(f Flavor) (string, string) { return f.ID, f.Name })
		if err != nil {
			return nil, err
		}
		if !f.meetsMinimum() {
			return nil, errs.Usage("flavor %s is too small for a builder. Required: CPU: %d MEM: %dM DISK: %dG. Got: CPU: %d MEM: %dM DISK: %dG.",
				nameOrID, MinVCPUs, MinRAMMiB, MinDiskGiB, f.VCPUs, f.RAMMiB, f.DiskGiB)
		}
		return f, nil
	}
	sorted := slices.Clone(all)
	slices.SortFunc(sorted, func(a, b Flavor) int {
		return cmp.Or(cmp.Compare(a.VCPUs, b.VCPUs), cmp.Compare(a.RAMMiB, b.RAMMiB), cmp.Compare(a.DiskGiB, b.DiskGiB),
			strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
	})
	for i := range sorted {
		if sorted[i].meetsMinimum() {
			return &sorted[i], nil
		}
	}
	return nil, errs.New(errs.KindNotFound, "no suitable flavor found: none has at least %d vCPUs, %d MiB RAM and %d GiB disk; pass --flavor",
		MinVCPUs, MinRAMMiB, MinDiskGiB)
}

// findByIDOrName returns the item whose ID is key, else the one item named
// key. Several items of that name is a usage error listing their IDs.
func findByIDOrName[T any](all []T, key, kind string, idName func(T) (string, string)) (*T, error) {
	var named []int
	for i := range all {
		id, name := idName(all[i])
		if id == key {
			return &all[i], nil
		}
		if name == key {
			named = append(named, i)
		}
	}
	switch len(named) {
	case 0:
		return nil, errs.New(errs.KindNotFound, "given %s %s not found", kind, key)
	case 1:
		return &all[named[0]], nil
	}
	ids := make([]string, 0, len(named))
	for _, i := range named {
		id, _ := idName(all[i])
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return nil, errs.Usage("%s name %s is ambiguous: pass one of the IDs %s", kind, key, strings.Join(ids, ", "))
}

// networkJSON decodes the network fields we need, router:external included
// (gophercloud's Network has a custom decoder that an extension struct
// cannot ride along with).
type networkJSON struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	ProjectID string `json:"project_id"`
	TenantID  string `json:"tenant_id"`
	Shared    bool   `json:"shared"`
	External  bool   `json:"router:external"`
}

// SelectNetwork returns the network named or with the ID nameOrID; when
// nameOrID is empty, the best network that has a subnet (see pickNetwork).
func (c *Cloud) SelectNetwork(ctx context.Context, nameOrID string) (*Network, error) {
	var nets []Network
	var subs []Subnet
	err := Retry(ctx, c.log, "list networks", func(ctx context.Context) error {
		pages, err := networks.List(c.network, networks.ListOpts{}).AllPages(ctx)
		if err != nil {
			return err
		}
		var raw []networkJSON
		if err := networks.ExtractNetworksInto(pages, &raw); err != nil {
			return err
		}
		nets = nets[:0]
		for _, n := range raw {
			nets = append(nets, Network{ID: n.ID, Name: n.Name, ProjectID: cmp.Or(n.ProjectID, n.TenantID), Shared: n.Shared, External: n.External})
		}
		pages, err = subnets.List(c.network, subnets.ListOpts{}).AllPages(ctx)
		if err != nil {
			return err
		}
		all, err := subnets.ExtractSubnets(pages)
		subs = subs[:0]
		for _, s := range all {
			subs = append(subs, Subnet{ID: s.ID, NetworkID: s.NetworkID, IPVersion: s.IPVersion, CIDR: s.CIDR})
		}
		return err
	})
	if err != nil {
		return nil, classify(err, "list networks")
	}
	n, err := pickNetwork(nets, subs, c.projectID, nameOrID)
	if err == nil {
		c.log.Debug("network selected", "network", n.Name, "id", n.ID)
	}
	return n, err
}

// pickNetwork chooses the builder's network.
//
// Given nameOrID: the network with that ID, else the one with that exact
// name (several: a usage error listing the IDs; none: not found).
//
// Not given: among networks with at least one visible subnet (none: "no
// valid subnets found"), the first by these keys, in order — so the choice
// never depends on the order the API lists them in:
//  1. not external (router:external) before external;
//  2. the project's own before shared ones;
//  3. exactly one IPv4 subnet, then several IPv4 subnets, then IPv6 only;
//  4. name, then ID.
//
// (The Python tool took the network of the first subnet listed, which was
// arbitrary when several were visible.)
func pickNetwork(nets []Network, subs []Subnet, projectID, nameOrID string) (*Network, error) {
	withSubnets := make([]Network, 0, len(nets))
	for _, n := range nets {
		n.Subnets = nil
		for _, s := range subs {
			if s.NetworkID == n.ID {
				n.Subnets = append(n.Subnets, s)
			}
		}
		withSubnets = append(withSubnets, n)
	}
	if nameOrID != "" {
		return findByIDOrName(withSubnets, nameOrID, "network", func(n Network) (string, string) { return n.ID, n.Name })
	}
	withSubnets = slices.DeleteFunc(withSubnets, func(n Network) bool { return len(n.Subnets) == 0 })
	if len(withSubnets) == 0 {
		return nil, errs.New(errs.KindNotFound, "no valid subnets found: the project sees no network with a subnet; pass --network")
	}
	rank := func(n Network) (external, foreign, v4 int) {
		if n.External {
			external = 1
		}
		if projectID == "" || n.ProjectID != projectID {
			foreign = 1
		}
		count := 0
		for _, s := range n.Subnets {
			if s.IPVersion == 4 {
				count++
			}
		}
		switch {
		case count == 1:
			v4 = 0
		case count > 1:
			v4 = 1
		default:
			v4 = 2
		}
		return
	}
	slices.SortFunc(withSubnets, func(a, b Network) int {
		ae, af, a4 := rank(a)
		be, bf, b4 := rank(b)
		return cmp.Or(cmp.Compare(ae, be), cmp.Compare(af, bf), cmp.Compare(a4, b4),
			strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
	})
	return &withSubnets[0], nil
}
