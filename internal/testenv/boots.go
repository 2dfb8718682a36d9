package testenv

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultGuestBootsFile is where the test virt driver records guest boots
// (.ci/openstack-up.sh sets GRIB_GUEST_BOOTS for nova-compute to this path).
const DefaultGuestBootsFile = "/var/lib/grib-openstack/guest-boots.log"

// GuestBootsFile is the test driver's record of guest boots:
// $GRIB_GUEST_BOOTS, else DefaultGuestBootsFile.
func GuestBootsFile() string {
	if p := os.Getenv("GRIB_GUEST_BOOTS"); p != "" {
		return p
	}
	return DefaultGuestBootsFile
}

// Boot is one guest start recorded by the test driver: a spawn, a power_on
// or a reboot of a server whose image has grib_test_guest=true.
type Boot struct {
	Time       time.Time
	Server     string // the server's name (it carries the test's prefix)
	ServerID   string
	Kind       string // spawn, power_on or reboot
	ImageID    string
	ImageBytes int64 // size of the image file; a few MiB means no OS (cheap)
	Accel      string
}

// GuestBoots returns the recorded boots of servers whose name starts with
// prefix ("" for all), oldest first.
func GuestBoots(prefix string) ([]Boot, error) {
	f, err := os.Open(GuestBootsFile())
	if err != nil {
		return nil, fmt.Errorf("testenv: guest boot record: %w", err)
	}
	defer f.Close()
	return parseBoots(f, prefix)
}

// parseBoots reads the driver's tab-separated lines: time, server name,
// server ID, kind, image ID, image bytes, accel.
func parseBoots(r io.Reader, prefix string) ([]Boot, error) {
	var boots []Boot
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 7 {
			return nil, fmt.Errorf("testenv: guest boot record line %d has %d fields, want 7", n, len(f))
		}
		if !strings.HasPrefix(f[1], prefix) {
			continue
		}
		at, err := time.Parse(time.RFC3339, f[0])
		if err != nil {
			return nil, fmt.Errorf("testenv: guest boot record line %d: %w", n, err)
		}
		size, err := strconv.ParseInt(f[5], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("testenv: guest boot record line %d: image size: %w", n, err)
		}
		boots = append(boots, Boot{Time: at, Server: f[1], ServerID: f[2], Kind: f[3],
			ImageID: f[4], ImageBytes: size, Accel: f[6]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("testenv: guest boot record: %w", err)
	}
	return boots, nil
}
