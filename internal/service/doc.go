// Package service is the builder host: the configuration file of a build
// matrix, `build` (every cell with bounded parallelism, one lock per image
// name, retries of transient cloud errors, the consumer callback and the
// latest file), `latest` (the newest image per base, arch and cloud),
// the schedule decision (interval, new runner releases, base image refresh)
// and `serve` (the same as a daemon with /healthz, /metrics and
// /v1/images/latest). setup's files are written by internal/service/install.
//
// The package builds nothing itself: a Builder (the same path as `run`)
// does, and a Catalog lists the images of a cloud. Both are small
// interfaces that the command line connects to the real builders and clouds,
// and that tests replace with fakes.
package service
