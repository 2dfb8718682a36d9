package service_test

import (
	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/cli"
)

// stackBackend wires the OpenStack builder the way cmd does, reading the
// environment from getenv so that a test's clouds file, HOME and TMPDIR
// never touch the process environment.
func stackBackend(getenv func(string) string) cli.Backend {
	ob := &builder.OpenStack{Getenv: getenv, Version: "it-test"}
	return cli.Backend{Builds: &build.Builds{OpenStack: ob}, Init: ob.Init, LatestBuildID: ob.LatestBuildID, Sweep: ob.Sweep}
}
