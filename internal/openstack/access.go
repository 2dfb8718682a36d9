package openstack

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/keypairs"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Keypairs is what the builder needs of Nova's keypairs.
type Keypairs interface {
	GetKeypair(ctx context.Context, name string) (*Keypair, error)
	ImportKeypair(ctx context.Context, name, publicKey string) (*Keypair, error)
	DeleteKeypair(ctx context.Context, name string) error
}

// Keypair is a Nova keypair.
type Keypair struct {
	Name        string
	Fingerprint string // Nova's: colon-separated MD5 of the key blob
	PublicKey   string
}

// GetKeypair reads a keypair; a missing one is errs.KindNotFound.
func (c *Cloud) GetKeypair(ctx context.Context, name string) (*Keypair, error) {
	var out *Keypair
	err := Retry(ctx, c.log, "get keypair", func(ctx context.Context) error {
		k, err := keypairs.Get(ctx, c.compute, name, nil).Extract()
		if err != nil {
			return err
		}
		out = &Keypair{Name: k.Name, Fingerprint: k.Fingerprint, PublicKey: k.PublicKey}
		return nil
	})
	return out, classify(err, "get keypair "+name)
}

// ImportKeypair imports an OpenSSH public key under name. A keypair of that
// name already existing is an error (Nova answers 409): delete it first.
func (c *Cloud) ImportKeypair(ctx context.Context, name, publicKey string) (*Keypair, error) {
	k, err := keypairs.Create(ctx, c.compute, keypairs.CreateOpts{Name: name, PublicKey: strings.TrimSpace(publicKey)}).Extract()
	if err != nil {
		return nil, classify(err, "import keypair "+name)
	}
	c.log.Info("keypair imported", "keypair", name, "fingerprint", k.Fingerprint)
	return &Keypair{Name: k.Name, Fingerprint: k.Fingerprint, PublicKey: k.PublicKey}, nil
}

// DeleteKeypair deletes a keypair; one already gone is not an error.
func (c *Cloud) DeleteKeypair(ctx context.Context, name string) error {
	err := Retry(ctx, c.log, "delete keypair", func(ctx context.Context) error {
		return keypairs.Delete(ctx, c.compute, name, nil).ExtractErr()
	})
	if err == nil || IsNotFound(err) {
		return nil
	}
	return classify(err, "delete keypair "+name)
}

// ListKeypairs lists the user's keypairs whose name starts with namePrefix,
// sorted by name (for sweeps; not part of Keypairs).
func (c *Cloud) ListKeypairs(ctx context.Context, namePrefix string) ([]Keypair, error) {
	var out []Keypair
	err := Retry(ctx, c.log, "list keypairs", func(ctx context.Context) error {
		pages, err := keypairs.List(c.compute, nil).AllPages(ctx)
		if err != nil {
			return err
		}
		all, err := keypairs.ExtractKeyPairs(pages)
		out = out[:0]
		for _, k := range all {
			if strings.HasPrefix(k.Name, namePrefix) {
				out = append(out, Keypair{Name: k.Name, Fingerprint: k.Fingerprint, PublicKey: k.PublicKey})
			}
		}
		return err
	})
	if err != nil {
		return nil, classify(err, "list keypairs")
	}
	slices.SortFunc(out, func(a, b Keypair) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// SecurityGroups is what the builder needs of Neutron's security groups.
type SecurityGroups interface {
	EnsureSecurityGroup(ctx context.Context, name, description string) (*SecurityGroup, error)
	ListSecurityGroups(ctx context.Context, name string) ([]SecurityGroup, error)
	DeleteSecurityGroup(ctx context.Context, id string) error
}

// SecurityGroup is a Neutron security group of the project.
type SecurityGroup struct {
	ID        string
	Name      string
	CreatedAt time.Time
}

// ListSecurityGroups lists the project's security groups named exactly name,
// oldest first (ties by ID).
func (c *Cloud) ListSecurityGroups(ctx context.Context, name string) ([]SecurityGroup, error) {
	var out []SecurityGroup
	err := Retry(ctx, c.log, "list security groups", func(ctx context.Context) error {
		// An admin token sees every project's groups: keep to ours.
		pages, err := groups.List(c.network, groups.ListOpts{Name: name, ProjectID: c.projectID}).AllPages(ctx)
		if err != nil {
			return err
		}
		all, err := groups.ExtractGroups(pages)
		if err != nil {
			return err
		}
		out = out[:0]
		for _, g := range all {
			if g.Name == name {
				out = append(out, SecurityGroup{ID: g.ID, Name: g.Name, CreatedAt: g.CreatedAt})
			}
		}
		return nil
	})
	if err != nil {
		return nil, classify(err, "list security groups "+name)
	}
	sortOldestFirst(out)
	return out, nil
}

func sortOldestFirst(gs []SecurityGroup) {
	slices.SortFunc(gs, func(a, b SecurityGroup) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
}

// EnsureSecurityGroup returns the project's one security group called name,
// creating it if needed, with ingress ICMP and TCP 22 over IPv4 from
// anywhere (the Python tool's rules).
//
// It is safe when several processes ensure the same name at once. After a
// create it lists again; when several groups of that name exist, the oldest
// (then lowest ID) wins and the others are deleted. Neutron refuses to delete
// a group a port uses (409), and such a group is left alone, so a group in use
// is never removed. Refer to the group by name when booting: Nova resolves it
// at boot, so a process that saw a group that lost the race still boots with
// the winner.
func (c *Cloud) EnsureSecurityGroup(ctx context.Context, name, description string) (*SecurityGroup, error) {
	// A concurrent ensure may delete the group this one picked (it lost the
	// race) while rules are added: start again, a bounded number of times.
	for attempt := 1; ; attempt++ {
		g, err := c.ensureSecurityGroupOnce(ctx, name, description)
		if err == nil || !errs.Is(err, errs.KindNotFound) || attempt == 3 {
			return g, err
		}
		c.log.Debug("security group vanished under a concurrent ensure; again", "security_group", name)
	}
}

func (c *Cloud) ensureSecurityGroupOnce(ctx context.Context, name, description string) (*SecurityGroup, error) {
	found, err := c.ListSecurityGroups(ctx, name)
	if err != nil {
		return nil, err
	}
	if len(found) == 0 {
		g, err := groups.Create(ctx, c.network, groups.CreateOpts{Name: name, Description: description}).Extract()
		if err != nil {
			return nil, classify(err, "create security group "+name)
		}
		c.log.Info("security group created", "security_group", name, "id", g.ID)
		if found, err = c.ListSecurityGroups(ctx, name); err != nil {
			return nil, err
		}
		if len(found) == 0 { // removed by a concurrent ensure that saw another group win
			return nil, errs.New(errs.KindNotFound, "security group %s vanished right after it was created", name)
		}
	}
	winner := found[0]
	for _, g := range found[1:] {
		err := c.DeleteSecurityGroup(ctx, g.ID)
		switch {
		case err == nil:
			c.log.Info("duplicate security group removed", "security_group", name, "id", g.ID, "kept", winner.ID)
		case IsConflict(err):
			c.log.Warn("duplicate security group is in use; left in place", "security_group", name, "id", g.ID)
		default:
			return nil, err
		}
	}
	if err := c.ensureIngressRules(ctx, winner.ID); err != nil {
		return nil, err
	}
	return &winner, nil
}

// builderIngress returns the rules every builder group has: ping and SSH.
func builderIngress() []rules.CreateOpts {
	return []rules.CreateOpts{
		{Direction: rules.DirIngress, EtherType: rules.EtherType4, Protocol: rules.ProtocolICMP},
		{Direction: rules.DirIngress, EtherType: rules.EtherType4, Protocol: rules.ProtocolTCP, PortRangeMin: 22, PortRangeMax: 22},
	}
}

func (c *Cloud) ensureIngressRules(ctx context.Context, groupID string) error {
	var have []rules.SecGroupRule
	err := Retry(ctx, c.log, "list security group rules", func(ctx context.Context) error {
		pages, err := rules.List(c.network, rules.ListOpts{SecGroupID: groupID}).AllPages(ctx)
		if err != nil {
			return err
		}
		have, err = rules.ExtractRules(pages)
		return err
	})
	if err != nil {
		return classify(err, "list rules of security group "+groupID)
	}
	for _, want := range builderIngress() {
		if slices.ContainsFunc(have, func(r rules.SecGroupRule) bool { return sameRule(r, want) }) {
			continue
		}
		want.SecGroupID = groupID
		_, err := rules.Create(ctx, c.network, want).Extract()
		// 409: a concurrent ensure added the same rule first.
		if err != nil && !IsConflict(err) {
			// A concurrent ensure may have deleted the group meanwhile; Neutron
			// then answers 500 (a foreign key violation), not 404.
			if _, gerr := groups.Get(ctx, c.network, groupID).Extract(); IsNotFound(gerr) {
				return errs.New(errs.KindNotFound, "security group %s was deleted while its rules were added", groupID)
			}
			return classify(err, "add rule to security group "+groupID)
		}
	}
	return nil
}

func sameRule(r rules.SecGroupRule, want rules.CreateOpts) bool {
	return r.Direction == string(want.Direction) && r.EtherType == string(want.EtherType) &&
		r.Protocol == string(want.Protocol) && r.PortRangeMin == want.PortRangeMin &&
		r.PortRangeMax == want.PortRangeMax && r.RemoteGroupID == "" &&
		(r.RemoteIPPrefix == "" || r.RemoteIPPrefix == "0.0.0.0/0")
}

// DeleteSecurityGroup deletes a security group; one already gone is not an
// error, one in use is a 409 error (IsConflict).
func (c *Cloud) DeleteSecurityGroup(ctx context.Context, id string) error {
	err := Retry(ctx, c.log, "delete security group", func(ctx context.Context) error {
		return groups.Delete(ctx, c.network, id).ExtractErr()
	})
	if err == nil || IsNotFound(err) {
		return nil
	}
	return classify(err, "delete security group "+id)
}
