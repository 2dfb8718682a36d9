// Package openstack is the project's narrow access to OpenStack over
// gophercloud v2: clouds.yaml loading (LoadCloud, as the openstack CLI finds
// it), authentication (Connect) and one small interface per need — Servers,
// Images, Keypairs, SecurityGroups, Selection — all implemented by *Cloud.
//
// Conventions:
//   - every call takes a context first; every wait (WaitServer,
//     WaitImageActive, DeleteServer, StopServer) polls from 500 ms up to a
//     2 s cap and ends with ctx;
//   - idempotent calls (get, list, delete) are retried on transient errors
//     (IsTransient) with a bounded backoff; creates never are;
//   - errors are classified with internal/errs where the kind is known:
//     unreachable, auth (401/403), not found (404), build (server ERROR,
//     with Nova's fault message), publish (image killed);
//   - passwords stay in CloudConfig.AuthOptions and never reach an error or a
//     log line.
//   - clouds.yaml's auth_type must be one of SupportedAuthTypes (others are
//     refused, not sent as password auth); insecure: true or verify: false
//     turn TLS checks off, and Connect warns (once per cloud per Connector).
package openstack

// *Cloud implements every interface of the package.
var (
	_ Servers        = (*Cloud)(nil)
	_ Images         = (*Cloud)(nil)
	_ Keypairs       = (*Cloud)(nil)
	_ SecurityGroups = (*Cloud)(nil)
	_ Selection      = (*Cloud)(nil)
)
