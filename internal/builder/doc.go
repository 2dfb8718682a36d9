// Package builder runs an image build as an ordered list of steps, each with
// its cleanup (see Step and Runner), for the two builders: openstack (a
// builder server on the cloud, snapshotted) and local (qemu on this host).
// Both share one provisioning path (internal/provision) and one publish and
// prune path.
package builder
