package openstack

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// TestConnectTLSVerification connects through clouds.yaml to a Keystone
// served over TLS with a self-signed certificate: the connection fails the
// certificate check unless insecure: true or verify: false turn it off, and
// then one warning names the cloud.
func TestConnectTLSVerification(t *testing.T) {
	tests := []struct {
		name     string
		settings string // extra keys of the entry
		wantOK   bool
		wantWhy  string // the setting the warning names
	}{
		{name: "checked by default", wantOK: false},
		{name: "verify true", settings: "verify: true", wantOK: false},
		{name: "insecure false", settings: "insecure: false", wantOK: false},
		{name: "insecure true", settings: "insecure: true", wantOK: true, wantWhy: "insecure: true"},
		{name: "insecure wins over verify", settings: "insecure: true\n    verify: true", wantOK: true, wantWhy: "insecure: true"},
		{name: "verify false", settings: "verify: false", wantOK: true, wantWhy: "verify: false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFakeCloud(t, true)
			path := writeFile(t, filepath.Join(t.TempDir(), "clouds.yaml"), "clouds:\n  fake:\n"+
				"    auth:\n      auth_url: "+f.srv.URL+"/v3\n      username: u\n      password: "+testPassword+"\n"+
				"      project_name: ci\n      user_domain_name: Default\n      project_domain_name: Default\n"+
				"    region_name: RegionOne\n    "+tt.settings+"\n")
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			conn := Connector{Paths: []string{path}, Log: log}
			for range 2 { // a second connection does not warn again
				c, err := conn.Connect(context.Background(), "fake", nil)
				if !tt.wantOK {
					if err == nil {
						t.Fatal("connected to an untrusted certificate")
					}
					if !errors.As(err, new(*tls.CertificateVerificationError)) || errs.KindOf(err) != errs.KindUnreachable {
						t.Fatalf("error %v (kind %v), want a certificate verification failure, unreachable", err, errs.KindOf(err))
					}
					if !strings.Contains(err.Error(), `cloud "fake"`) || !strings.Contains(err.Error(), "cacert") {
						t.Errorf("error %q does not name the cloud and cacert", err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("connect with %s: %v", tt.settings, err)
				}
				// The services are reached through the same transport.
				if _, err := c.ListImagesByName(context.Background(), "none", false); errors.As(err, new(*tls.CertificateVerificationError)) {
					t.Errorf("the image service's certificate was checked: %v", err)
				}
			}
			n := strings.Count(logs.String(), "TLS certificate checks are off")
			switch {
			case tt.wantWhy == "" && n != 0:
				t.Errorf("warned with TLS checks on:\n%s", logs.String())
			case tt.wantWhy != "" && n != 1:
				t.Errorf("%d warnings over two connections, want 1:\n%s", n, logs.String())
			case tt.wantWhy != "" && (!strings.Contains(logs.String(), "cloud=fake") || !strings.Contains(logs.String(), `setting="`+tt.wantWhy+`"`)):
				t.Errorf("warning does not name the cloud and %q:\n%s", tt.wantWhy, logs.String())
			}
			if strings.Contains(logs.String(), testPassword) {
				t.Errorf("password in the logs:\n%s", logs.String())
			}
		})
	}
}
