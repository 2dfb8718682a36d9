package faultproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// fakeMap maps an endpoint to http://proxy-<service><path>, so a rewrite is
// visible and deterministic.
func fakeMap(service, rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	if u.Host == "" {
		return "", errors.New("no host")
	}
	u.Host = "proxy-" + service
	return u.String(), nil
}

func TestRewriteCatalogGolden(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "token.json"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := rewriteCatalog(in, fakeMap)
	if err != nil {
		t.Fatalf("rewriteCatalog: %v", err)
	}
	var indented bytes.Buffer // the golden file is indented, for review
	if err := json.Indent(&indented, out, "", "  "); err != nil {
		t.Fatalf("output is not JSON: %v", err)
	}
	got := append(indented.Bytes(), '\n')
	golden := filepath.Join("testdata", "token.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("rewritten token differs from %s:\n got: %s\nwant: %s", golden, got, want)
	}
	// Independently of the golden file: every URL was mapped, nothing else lost.
	var before, after struct {
		Token struct {
			Catalog []struct {
				Type      string
				Endpoints []struct{ URL string }
			}
			ExpiresAt string `json:"expires_at"`
		}
	}
	if err := json.Unmarshal(in, &before); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &after); err != nil {
		t.Fatal(err)
	}
	if after.Token.ExpiresAt != before.Token.ExpiresAt || len(after.Token.Catalog) != len(before.Token.Catalog) {
		t.Fatalf("token fields lost: %+v", after.Token)
	}
	for i, e := range after.Token.Catalog {
		for j, ep := range e.Endpoints {
			want, _ := fakeMap(e.Type, before.Token.Catalog[i].Endpoints[j].URL)
			if ep.URL != want {
				t.Errorf("%s endpoint %d: url %q, want %q", e.Type, j, ep.URL, want)
			}
		}
	}
}

func TestRewriteCatalogCases(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    string // exact output when wantErr is ""
		wantErr string
	}{
		{name: "unscoped token kept as is", body: `{"token": {"methods": ["password"]}}`,
			want: `{"token": {"methods": ["password"]}}`},
		{name: "null catalog kept as is", body: `{"token":{"catalog":null}}`, want: `{"token":{"catalog":null}}`},
		{name: "empty catalog", body: `{"token":{"catalog":[]}}`, want: `{"token":{"catalog":[]}}`},
		{name: "big numbers keep their text", body: `{"token":{"n":12345678901234567890,"catalog":[]}}`,
			want: `{"token":{"catalog":[],"n":12345678901234567890}}`},
		{name: "not JSON", body: `<html>`, wantErr: "not a JSON object"},
		{name: "trailing data", body: `{"token":{}} {}`, wantErr: "data after"},
		{name: "no token", body: `{"access":{}}`, wantErr: `no "token"`},
		{name: "catalog not a list", body: `{"token":{"catalog":{}}}`, wantErr: "not a list"},
		{name: "entry not an object", body: `{"token":{"catalog":[1]}}`, wantErr: "not an object"},
		{name: "entry without type", body: `{"token":{"catalog":[{"endpoints":[]}]}}`, wantErr: `no "type"`},
		{name: "entry without endpoints", body: `{"token":{"catalog":[{"type":"compute"}]}}`, wantErr: `no "endpoints"`},
		{name: "endpoint without url", body: `{"token":{"catalog":[{"type":"compute","endpoints":[{}]}]}}`,
			wantErr: `no "url"`},
		{name: "mapping refused", body: `{"token":{"catalog":[{"type":"compute","endpoints":[{"url":"/rel"}]}]}}`,
			wantErr: "no host"},
		{name: "html characters kept",
			body: `{"token":{"catalog":[{"type":"image","endpoints":[{"url":"http://127.0.0.1:9292/?a=1&b=<2>"}]}]}}`,
			want: `{"token":{"catalog":[{"endpoints":[{"url":"http://proxy-image/?a=1&b=<2>"}],"type":"image"}]}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := rewriteCatalog([]byte(tt.body), fakeMap)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("rewriteCatalog: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestIsTokenPath(t *testing.T) {
	for path, want := range map[string]bool{
		"/v3/auth/tokens":           true,
		"/v3/auth/tokens/":          true,
		"/identity/v3/auth/tokens":  true,
		"/v3/auth/tokens/OS-PKI":    false,
		"/v3/auth/projects":         false,
		"/v3":                       false,
		"/v2.1/servers/auth/tokens": true, // only ever asked on the identity service
	} {
		if got := isTokenPath(path); got != want {
			t.Errorf("isTokenPath(%q) = %v, want %v", path, got, want)
		}
	}
}

// FuzzRewriteCatalog feeds arbitrary bodies (Keystone's output is outside
// text): the rewrite must never panic, and whatever it accepts must come out
// as valid JSON that, rewritten again, shows only mapped URLs.
func FuzzRewriteCatalog(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		mapped := func(service, _ string) (string, error) { return "http://proxy/" + service, nil }
		got, err := rewriteCatalog(body, mapped)
		if err != nil || bytes.Equal(got, body) {
			return // refused, or kept unchanged (no catalog)
		}
		if !json.Valid(got) {
			t.Fatalf("output is not JSON:\n%s", got)
		}
		again, err := rewriteCatalog(got, func(service, rawURL string) (string, error) {
			if rawURL != "http://proxy/"+service {
				t.Errorf("catalog URL %q of %q was not mapped", rawURL, service)
			}
			return rawURL, nil
		})
		if err != nil {
			t.Fatalf("rewriting the output again: %v\n%s", err, got)
		}
		if !bytes.Equal(again, got) {
			t.Fatalf("rewrite is not stable:\n%s\n%s", got, again)
		}
	})
}
