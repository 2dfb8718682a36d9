// Command github-runner-image-builder builds GitHub Actions runner VM images
// for OpenStack. See the README for commands and exit codes.
package main

func main() {}
