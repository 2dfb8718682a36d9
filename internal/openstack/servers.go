package openstack

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/keypairs"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Server statuses the builder waits for. StatusDeleted is not a Nova status:
// WaitServer treats a 404 as reaching it.
const (
	StatusActive  = "ACTIVE"
	StatusShutoff = "SHUTOFF"
	StatusError   = "ERROR"
	StatusDeleted = "DELETED"
)

// Servers is what the builder needs of Nova.
type Servers interface {
	CreateServer(ctx context.Context, spec ServerSpec) (*Server, error)
	GetServer(ctx context.Context, id string) (*Server, error)
	ListServers(ctx context.Context, namePrefix string) ([]Server, error)
	DeleteServer(ctx context.Context, id string) error
	StopServer(ctx context.Context, id string) error
	WaitServer(ctx context.Context, id, target string) (*Server, error)
	ConsoleOutput(ctx context.Context, id string, lines int) (string, error)
	CreateSnapshot(ctx context.Context, serverID, name string, metadata map[string]string) (string, error)
}

// ServerSpec is what CreateServer boots.
type ServerSpec struct {
	Name          string
	ImageID       string
	FlavorID      string
	NetworkID     string
	KeyName       string
	SecurityGroup string // a name or ID; a name is resolved by Nova at boot
	UserData      []byte // raw; encoded here (Nova caps it at 65535 bytes encoded)
	ConfigDrive   bool
	Metadata      map[string]string
	Tags          []string
}

// maxUserData is Nova's limit on the base64-encoded user data.
const maxUserData = 65535

// UserDataFits reports whether Nova takes ud as a server's user-data (at
// most 65535 bytes once base64-encoded).
func UserDataFits(ud []byte) bool { return base64.StdEncoding.EncodedLen(len(ud)) <= maxUserData }

// Server is the part of a Nova server the builder reads.
type Server struct {
	ID        string
	Name      string
	Status    string
	Fault     string // Nova's fault message, set in ERROR
	Created   time.Time
	Metadata  map[string]string
	Addresses map[string][]Address // by network name
}

// Address is one address of a server on a network.
type Address struct {
	Addr netip.Addr
	Type string // "fixed" or "floating" ("" if the cloud does not say)
}

func toServer(s *servers.Server) *Server {
	out := &Server{ID: s.ID, Name: s.Name, Status: s.Status, Fault: s.Fault.Message,
		Created: s.Created, Metadata: s.Metadata, Addresses: map[string][]Address{}}
	for net, v := range s.Addresses {
		list, _ := v.([]any)
		for _, item := range list {
			m, _ := item.(map[string]any)
			a, _ := m["addr"].(string)
			ip, err := netip.ParseAddr(a)
			if err != nil {
				continue
			}
			t, _ := m["OS-EXT-IPS:type"].(string)
			out.Addresses[net] = append(out.Addresses[net], Address{Addr: ip, Type: t})
		}
	}
	return out
}

// FixedAddress returns the server's fixed address on network (its name; ""
// means any network, in name order), IPv4 before IPv6. It fails with
// errs.KindNotFound when there is none.
func FixedAddress(s *Server, network string) (netip.Addr, error) {
	nets := []string{network}
	if network == "" {
		nets = nets[:0]
		for n := range s.Addresses {
			nets = append(nets, n)
		}
		slices.Sort(nets)
	}
	for _, want4 := range []bool{true, false} {
		for _, n := range nets {
			for _, a := range s.Addresses[n] {
				if a.Type != "" && a.Type != "fixed" {
					continue
				}
				if a.Addr.Unmap().Is4() == want4 {
					return a.Addr.Unmap(), nil
				}
			}
		}
	}
	where := "any network"
	if network != "" {
		where = "network " + network
	}
	return netip.Addr{}, errs.New(errs.KindNotFound, "server %s (%s) has no fixed address on %s", s.Name, s.ID, where)
}

// CreateServer boots a server and returns it as Nova first reports it
// (usually BUILD); wait with WaitServer. It is never retried here: a lost
// reply could leave a second server behind (the builder retries after
// looking for the server by its build ID). When the server was created but
// reading it back failed, the error comes with a Server holding its ID.
func (c *Cloud) CreateServer(ctx context.Context, spec ServerSpec) (*Server, error) {
	// Encode here: gophercloud sends data that already decodes as base64
	// unchanged, which would corrupt a user-data that happens to look like it.
	ud := base64.StdEncoding.EncodeToString(spec.UserData)
	if len(ud) > maxUserData {
		return nil, errs.Usage("user-data of server %s is %d bytes base64-encoded; Nova allows at most %d", spec.Name, len(ud), maxUserData)
	}
	opts := servers.CreateOpts{
		Name:        spec.Name,
		ImageRef:    spec.ImageID,
		FlavorRef:   spec.FlavorID,
		Networks:    []servers.Network{{UUID: spec.NetworkID}},
		ConfigDrive: &spec.ConfigDrive,
		Metadata:    spec.Metadata,
		Tags:        spec.Tags,
	}
	if spec.SecurityGroup != "" {
		opts.SecurityGroups = []string{spec.SecurityGroup}
	}
	if len(spec.UserData) > 0 {
		opts.UserData = []byte(ud)
	}
	var builder servers.CreateOptsBuilder = opts
	if spec.KeyName != "" {
		builder = keypairs.CreateOptsExt{CreateOptsBuilder: opts, KeyName: spec.KeyName}
	}
	s, err := servers.Create(ctx, c.compute, builder, nil).Extract()
	if err != nil {
		return nil, classify(err, "create server "+spec.Name)
	}
	c.log.Info("server created", "server", spec.Name, "id", s.ID)
	// The create reply holds only the ID (and adminPass): read the rest.
	full, err := c.GetServer(ctx, s.ID)
	if err != nil {
		// The server exists: its ID must reach the caller's cleanup.
		return &Server{ID: s.ID, Name: spec.Name}, err
	}
	return full, nil
}

// GetServer reads one server; a missing one is errs.KindNotFound.
func (c *Cloud) GetServer(ctx context.Context, id string) (*Server, error) {
	var out *Server
	err := Retry(ctx, c.log, "get server", func(ctx context.Context) error {
		s, err := servers.Get(ctx, c.compute, id).Extract()
		if err != nil {
			return err
		}
		out = toServer(s)
		return nil
	})
	return out, classify(err, "get server "+id)
}

// ListServers lists the project's servers whose name starts with namePrefix
// (all when empty), sorted by name then ID.
func (c *Cloud) ListServers(ctx context.Context, namePrefix string) ([]Server, error) {
	opts := servers.ListOpts{}
	if namePrefix != "" {
		// Nova's name filter is a regular expression: anchor and quote it,
		// then check again here (the database's regex dialect may differ).
		opts.Name = "^" + regexp.QuoteMeta(namePrefix)
	}
	var out []Server
	err := Retry(ctx, c.log, "list servers", func(ctx context.Context) error {
		pages, err := servers.List(c.compute, opts).AllPages(ctx)
		if err != nil {
			return err
		}
		all, err := servers.ExtractServers(pages)
		if err != nil {
			return err
		}
		out = out[:0]
		for i := range all {
			if strings.HasPrefix(all[i].Name, namePrefix) {
				out = append(out, *toServer(&all[i]))
			}
		}
		return nil
	})
	if err != nil {
		return nil, classify(err, "list servers")
	}
	slices.SortFunc(out, func(a, b Server) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// DeleteServer deletes a server and waits until Nova no longer knows it. A
// server already gone is not an error.
func (c *Cloud) DeleteServer(ctx context.Context, id string) error {
	err := Retry(ctx, c.log, "delete server", func(ctx context.Context) error {
		return servers.Delete(ctx, c.compute, id).ExtractErr()
	})
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return classify(err, "delete server "+id)
	}
	_, err = c.WaitServer(ctx, id, StatusDeleted)
	return err
}

// StopServer powers a server off and waits for SHUTOFF. A server already
// stopped (Nova answers 409) is waited for like any other.
func (c *Cloud) StopServer(ctx context.Context, id string) error {
	// Stopping is idempotent (a second stop is a 409), so it is retried.
	err := Retry(ctx, c.log, "stop server", func(ctx context.Context) error {
		err := servers.Stop(ctx, c.compute, id).ExtractErr()
		if IsConflict(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return classify(err, "stop server "+id)
	}
	_, err = c.WaitServer(ctx, id, StatusShutoff)
	return err
}

// WaitServer polls a server until its status is target, from small intervals
// capped at 2 s. It fails at once when the server turns ERROR, with Nova's
// fault message (errs.KindBuild), and ends with ctx. target StatusDeleted is
// reached when Nova answers 404 (ERROR does not stop that wait: a server in
// ERROR is still being deleted); for any other target a 404 is
// errs.KindNotFound. Transient API errors are polled through.
func (c *Cloud) WaitServer(ctx context.Context, id, target string) (*Server, error) {
	var last *Server
	err := c.poll(ctx, func(ctx context.Context) (bool, error) {
		s, err := servers.Get(ctx, c.compute, id).Extract()
		switch {
		case IsNotFound(err) && target == StatusDeleted:
			return true, nil
		case IsTransient(err):
			c.log.Debug("polling server: transient error", "id", id, "err", err)
			return false, nil
		case err != nil:
			return false, classify(err, "get server "+id)
		}
		last = toServer(s)
		switch last.Status {
		case target:
			// Nova itself shows DELETED for a moment before the server is
			// gone; only the 404 ends a delete wait.
			return target != StatusDeleted, nil
		case StatusError:
			if target == StatusDeleted { // a server in ERROR can still be deleted: wait for it to go
				return false, nil
			}
			return false, ServerError(last)
		}
		return false, nil
	})
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		status := "unknown"
		if last != nil {
			status = last.Status
		}
		return last, fmt.Errorf("waiting for server %s to be %s (status %s): %w", id, target, status, err)
	}
	return last, err
}

// ServerError is the errs.KindBuild error of a server in ERROR, with Nova's
// fault message.
func ServerError(s *Server) error {
	fault := s.Fault
	if fault == "" {
		fault = "Nova gave no fault message"
	}
	return errs.New(errs.KindBuild, "server %s (%s) went into ERROR: %s", s.Name, s.ID, fault)
}

// ConsoleOutput returns the last lines of the server's console log (all when
// lines <= 0).
func (c *Cloud) ConsoleOutput(ctx context.Context, id string, lines int) (string, error) {
	var out string
	err := Retry(ctx, c.log, "console output", func(ctx context.Context) error {
		var err error
		out, err = servers.ShowConsoleOutput(ctx, c.compute, id, servers.ShowConsoleOutputOpts{Length: max(lines, 0)}).Extract()
		return err
	})
	if err != nil {
		return "", classify(err, "console output of server "+id)
	}
	return lastLines(out, lines), nil
}

// lastLines keeps the last n lines of s (all when n <= 0).
func lastLines(s string, n int) string {
	if n <= 0 {
		return s
	}
	trimmed := strings.TrimSuffix(s, "\n")
	parts := strings.Split(trimmed, "\n")
	if len(parts) <= n {
		return s
	}
	return strings.Join(parts[len(parts)-n:], "\n") + s[len(trimmed):]
}

// CreateSnapshot asks Nova to snapshot a (stopped) server into a new image
// with metadata as its properties, and returns the image ID at once; wait
// with WaitImageActive. Never retried (a second snapshot would be created).
func (c *Cloud) CreateSnapshot(ctx context.Context, serverID, name string, metadata map[string]string) (string, error) {
	id, err := servers.CreateImage(ctx, c.compute, serverID, servers.CreateImageOpts{Name: name, Metadata: metadata}).ExtractImageID()
	if err != nil {
		return "", classify(err, fmt.Sprintf("snapshot server %s to image %s", serverID, name))
	}
	c.log.Info("snapshot requested", "server", serverID, "image", name, "image_id", id)
	return id, nil
}
