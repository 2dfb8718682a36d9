package openstack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	gcopenstack "github.com/gophercloud/gophercloud/v2/openstack"
	tokens3 "github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// ComputeMicroversion is the Nova API microversion every compute call uses.
// Pinned, not negotiated, so behaviour does not change with the cloud:
//   - 2.52 lets a server be created with tags (sweeps can find builders by tag);
//   - it is ≥ 2.45, so createImage returns the image ID in the body;
//   - it is < 2.92, so keypair import still accepts any key type Nova knows
//     (we import real ed25519 keys anyway);
//   - every Nova since Queens (2018, max 2.60) supports it; the stack used in
//     tests is Nova 26 (max 2.93).
const ComputeMicroversion = "2.52"

// UserAgent is prepended to gophercloud's User-Agent on every request.
const UserAgent = "github-runner-image-builder"

// Cloud is an authenticated connection to one cloud (one project). It
// implements Servers, Images, Keypairs, SecurityGroups and Selection. It is
// safe for concurrent use.
type Cloud struct {
	name      string
	projectID string
	log       *slog.Logger
	provider  *gophercloud.ProviderClient
	compute   *gophercloud.ServiceClient
	image     *gophercloud.ServiceClient
	network   *gophercloud.ServiceClient

	// sleep pauses between the polls of a wait; nil is a real timer. Tests
	// inject a fake clock here to check how soon a wait notices a change.
	sleep func(ctx context.Context, d time.Duration) error
	// transferIdle bounds an image transfer's wait on the cloud (0:
	// TransferIdleTimeout).
	transferIdle time.Duration
}

// Name is the cloud's clouds.yaml name.
func (c *Cloud) Name() string { return c.name }

// ProjectID is the project the token is scoped to ("" if the token has none).
func (c *Cloud) ProjectID() string { return c.projectID }

// Option changes how Connect connects.
type Option func(*connectOptions)

type connectOptions struct {
	log        *slog.Logger
	httpClient *http.Client
	proxy      func(*http.Request) (*url.URL, error)
	authURL    string
	endpoints  map[string]string
	paths      []string
	getenv     func(string) string
	transfer   time.Duration
	// firstWarning reports whether a warning about key is new (nil: every
	// warning is); Connector uses it to warn once per cloud.
	firstWarning func(key string) bool
	// auth, when set, shares authentications (see AuthCache); authScope
	// tells apart what the other options cannot show (the proxy).
	auth      *AuthCache
	authScope string
}

// WithAuthCache shares authentications through cache (see AuthCache);
// scope must differ where the options differ in what cannot be compared
// (the proxy function).
func WithAuthCache(cache *AuthCache, scope string) Option {
	return func(o *connectOptions) { o.auth, o.authScope = cache, scope }
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *connectOptions) { o.log = l } }

// WithHTTPClient sets the HTTP client of every request, e.g. one with a
// custom transport or timeout. TLS settings from clouds.yaml are applied to
// its transport when it is an *http.Transport.
func WithHTTPClient(c *http.Client) Option { return func(o *connectOptions) { o.httpClient = c } }

// WithProxy sets the proxy of the default client's transport (nil: the
// environment's, http.ProxyFromEnvironment). A client given with
// WithHTTPClient keeps its own.
func WithProxy(f func(*http.Request) (*url.URL, error)) Option {
	return func(o *connectOptions) { o.proxy = f }
}

// WithTransferIdleTimeout replaces TransferIdleTimeout (tests).
func WithTransferIdleTimeout(d time.Duration) Option {
	return func(o *connectOptions) { o.transfer = d }
}

// WithAuthURL replaces the cloud's auth_url (tests put a fault proxy there).
func WithAuthURL(u string) Option { return func(o *connectOptions) { o.authURL = u } }

// WithEndpoint replaces the catalog's endpoint of one service type
// ("compute", "image" or "network") with baseURL, e.g. a fault proxy's.
// baseURL is the service root including any version path
// (http://127.0.0.1:8774/v2.1/ for compute).
func WithEndpoint(serviceType, baseURL string) Option {
	return func(o *connectOptions) {
		if o.endpoints == nil {
			o.endpoints = map[string]string{}
		}
		o.endpoints[serviceType] = baseURL
	}
}

// WithCloudsPaths replaces the clouds.yaml search path (see CloudsPaths).
func WithCloudsPaths(paths ...string) Option { return func(o *connectOptions) { o.paths = paths } }

// Connect loads cloudName from clouds.yaml (see LoadCloud) and authenticates.
// Errors: clouds.yaml problems as LoadCloud; refused, unresolvable or timed
// out connections are errs.KindUnreachable; a 401 or 403 is errs.KindAuth; a
// service missing from the catalog is errs.KindNotFound.
func Connect(ctx context.Context, cloudName string, opts ...Option) (*Cloud, error) {
	o := connectOptions{getenv: os.Getenv}
	for _, apply := range opts {
		apply(&o)
	}
	if o.paths == nil {
		p, err := CloudsPaths(o.getenv)
		if err != nil {
			return nil, err
		}
		o.paths = p
	}
	cfg, err := LoadCloud(cloudName, o.paths)
	if err != nil {
		return nil, err
	}
	return ConnectConfig(ctx, cfg, opts...)
}

// ConnectConfig authenticates with an already loaded CloudConfig.
func ConnectConfig(ctx context.Context, cfg *CloudConfig, opts ...Option) (*Cloud, error) {
	o := connectOptions{}
	for _, apply := range opts {
		apply(&o)
	}
	log := o.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ao := cfg.AuthOptions
	if o.authURL != "" {
		ao.IdentityEndpoint = o.authURL
	}
	if ao.IdentityEndpoint == "" {
		return nil, errs.Usage("cloud %q in %s has no auth_url", cfg.Name, cfg.Path)
	}
	if cfg.TLSUnverified != "" && (o.firstWarning == nil || o.firstWarning("tls "+cfg.Name)) {
		log.Warn("TLS certificate checks are off for this cloud: anyone on the network path can read "+
			"its credentials and tokens; give the cloud's CA in cacert instead",
			"cloud", cfg.Name, "clouds_yaml", cfg.Path, "setting", cfg.TLSUnverified)
	}
	authenticate := func() (*gophercloud.ProviderClient, error) {
		provider, err := gcopenstack.NewClient(ao.IdentityEndpoint)
		if err != nil {
			return nil, errs.Wrap(errs.KindUsage, err, "cloud %q: auth_url %q", cfg.Name, ao.IdentityEndpoint)
		}
		provider.HTTPClient = httpClient(o.httpClient, o.proxy, cfg)
		provider.UserAgent.Prepend(UserAgent)
		log.Debug("authenticating", "cloud", cfg)
		if err := gcopenstack.Authenticate(ctx, provider, ao); err != nil {
			return nil, classifyAuth(err, cfg.Name, ao.IdentityEndpoint)
		}
		return provider, nil
	}
	var provider *gophercloud.ProviderClient
	var err error
	if o.auth != nil {
		provider, err = o.auth.provider(ctx, authKey(cfg, &o), authenticate)
	} else {
		provider, err = authenticate()
	}
	if err != nil {
		return nil, err
	}
	c := &Cloud{name: cfg.Name, log: log.With("cloud", cfg.Name), provider: provider, transferIdle: o.transfer}
	if r, ok := provider.GetAuthResult().(tokens3.CreateResult); ok {
		if p, err := r.ExtractProject(); err == nil && p != nil {
			c.projectID = p.ID
		}
	}
	if c.compute, err = serviceClient(gcopenstack.NewComputeV2, provider, cfg, o.endpoints, "compute"); err != nil {
		return nil, err
	}
	c.compute.Microversion = ComputeMicroversion
	if c.image, err = serviceClient(gcopenstack.NewImageV2, provider, cfg, o.endpoints, "image"); err != nil {
		return nil, err
	}
	if c.network, err = serviceClient(gcopenstack.NewNetworkV2, provider, cfg, o.endpoints, "network"); err != nil {
		return nil, err
	}
	c.log.Debug("authenticated", "project_id", c.projectID)
	return c, nil
}

// ResponseTimeout bounds the wait for a response's headers once a request
// was sent (an upload's body included), so that an API call the cloud never
// answers fails as a network timeout (IsTransient: idempotent calls are
// retried) instead of hanging until its step's deadline. Bodies (image
// downloads) are not bounded by it.
const ResponseTimeout = 2 * time.Minute

// httpClient is the client of every request: the given one (its transport
// as it is), or one whose transport waits at most ResponseTimeout for a
// response. TLS settings from clouds.yaml go on an *http.Transport.
func httpClient(given *http.Client, proxy func(*http.Request) (*url.URL, error), cfg *CloudConfig) http.Client {
	var hc http.Client
	if given != nil {
		hc = *given
	}
	switch t := hc.Transport.(type) {
	case nil:
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = ResponseTimeout
		tr.TLSClientConfig = cfg.TLS
		if proxy != nil {
			tr.Proxy = proxy
		}
		hc.Transport = tr
	case *http.Transport:
		if cfg.TLS != nil {
			tr := t.Clone()
			tr.TLSClientConfig = cfg.TLS
			hc.Transport = tr
		}
	}
	return hc
}

func serviceClient(
	newClient func(*gophercloud.ProviderClient, gophercloud.EndpointOpts) (*gophercloud.ServiceClient, error),
	provider *gophercloud.ProviderClient, cfg *CloudConfig, overrides map[string]string, serviceType string,
) (*gophercloud.ServiceClient, error) {
	sc, err := newClient(provider, cfg.Endpoint)
	if err != nil {
		var nf gophercloud.ErrEndpointNotFound
		if errors.As(err, &nf) {
			return nil, errs.Wrap(errs.KindNotFound, err,
				"cloud %q has no %s endpoint (region %q) in its catalog", cfg.Name, serviceType, cfg.Endpoint.Region)
		}
		return nil, fmt.Errorf("cloud %q: %s client: %w", cfg.Name, serviceType, err)
	}
	if u, ok := overrides[serviceType]; ok {
		if !strings.HasSuffix(u, "/") {
			u += "/"
		}
		sc.Endpoint, sc.ResourceBase = u, ""
		if serviceType == "network" {
			sc.ResourceBase = u + "v2.0/"
		}
	}
	return sc, nil
}

// classifyAuth turns an authentication failure into a classified error that
// names the cloud and the auth URL (never the credentials).
func classifyAuth(err error, cloud, authURL string) error {
	switch code := StatusCode(err); {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("authenticating to cloud %q: %w", cloud, err)
	case errors.As(err, new(*tls.CertificateVerificationError)):
		return errs.Wrap(errs.KindUnreachable, err,
			"cloud %q: the TLS certificate of %s is not trusted: set cacert in clouds.yaml to its CA", cloud, authURL)
	case code == http.StatusUnauthorized:
		return errs.New(errs.KindAuth,
			"cloud %q refused the credentials in clouds.yaml (HTTP 401 from %s): check username, password and project", cloud, authURL)
	case code == http.StatusForbidden:
		return errs.New(errs.KindAuth, "cloud %q: the user may not use that project or domain (HTTP 403 from %s)", cloud, authURL)
	case code == http.StatusNotFound:
		return errs.New(errs.KindUsage, "cloud %q: auth_url %s has no Keystone v3 API (HTTP 404)", cloud, authURL)
	case code != 0:
		return errs.New(errs.KindUnreachable, "cloud %q: Keystone at %s answered HTTP %d", cloud, authURL, code)
	case isUnreachable(err) || errors.Is(err, context.DeadlineExceeded):
		return errs.Wrap(errs.KindUnreachable, err, "cloud %q: cannot reach Keystone at %s", cloud, authURL)
	}
	return errs.Wrap(errs.KindAuth, err, "authenticating to cloud %q at %s", cloud, authURL)
}

// Connector opens clouds by their clouds.yaml names from the clouds.yaml
// found at Paths (see CloudsPaths). It is how every part of the tool
// reaches a cloud: the builders, init, sweep and the builder host's look-ups.
// A warning about a cloud's settings (TLS checks off) is logged once per
// cloud per Connector, however often it connects. Its zero value works;
// it is safe for concurrent use and must not be copied once used.
type Connector struct {
	Paths []string
	Log   *slog.Logger // nil: discard
	// Proxy is the proxy of every request (nil: the environment's).
	Proxy func(*http.Request) (*url.URL, error)
	// Auth, when set, shares authentications between connections (see
	// AuthCache); AuthScope names the Proxy's settings for its key.
	Auth      *AuthCache
	AuthScope string

	mu     sync.Mutex
	warned map[string]bool
}

// firstWarning reports whether key was not warned about yet, and marks it.
func (c *Connector) firstWarning(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.warned[key] {
		return false
	}
	if c.warned == nil {
		c.warned = map[string]bool{}
	}
	c.warned[key] = true
	return true
}

// Connect opens cloud, logging with log (nil: c.Log).
func (c *Connector) Connect(ctx context.Context, cloud string, log *slog.Logger) (*Cloud, error) {
	if log == nil {
		log = c.Log
	}
	opts := []Option{WithCloudsPaths(c.Paths...), func(o *connectOptions) { o.firstWarning = c.firstWarning }}
	if log != nil {
		opts = append(opts, WithLogger(log))
	}
	if c.Proxy != nil {
		opts = append(opts, WithProxy(c.Proxy))
	}
	if c.Auth != nil {
		opts = append(opts, WithAuthCache(c.Auth, c.AuthScope))
	}
	return Connect(ctx, cloud, opts...)
}
