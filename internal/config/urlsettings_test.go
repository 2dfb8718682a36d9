package config

import (
	"errors"
	"strings"
	"testing"
)

// urlSetting is a setting whose value is a URL (or, for the proxy,
// host:port): a place where credentials could be typed.
type urlSetting struct {
	id     string
	base   RunInput // valid with this setting at its default
	set    func(*RunSpec, string)
	scheme bool // scheme://authority/...; false is host:port
}

func urlSettings() []urlSetting {
	local := goodInput()
	local.Builder, local.Output, local.Cloud = "local", "/tmp/x.qcow2", ""
	return []urlSetting{
		{"runner_api_url", goodInput(), func(s *RunSpec, v string) { s.RunnerAPIURL = v }, true},
		{"script_url", goodInput(), func(s *RunSpec, v string) { s.ScriptURL = v }, true},
		{"base_image_url", local, func(s *RunSpec, v string) { s.BaseImageURL = v }, true},
		{"proxy", goodInput(), func(s *RunSpec, v string) { s.Proxy = v }, false},
	}
}

// userinfo is what a URL parser (net/url, and so the HTTP client that
// fetches the URL) takes for the user and password of s: the authority
// (after "//", without fragment and query, up to the path) up to its last
// "@"; without "//" (host:port) the same from the start. ok is false when
// there is no "@" there.
func userinfo(s string) (string, bool) {
	s, _, _ = strings.Cut(s, "#")
	s, _, _ = strings.Cut(s, "?")
	if i := strings.Index(s, "//"); i >= 0 {
		s = s[i+2:]
	}
	s, _, _ = strings.Cut(s, "/")
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return "", false
	}
	return s[:at], true
}

// withCredentials puts cred as the userinfo of s, an accepted value.
func withCredentials(s, cred string, scheme bool) string {
	if !scheme {
		return cred + "@" + s
	}
	i := strings.Index(s, "://") + len("://")
	return s[:i] + cred + "@" + s[i:]
}

// Every URL-valued setting refuses credentials in its URL, whatever the
// spelling, and its error never shows them: not the user (often a token,
// https://TOKEN@host), not the password.
func FuzzURLSettingsRefuseCredentials(f *testing.F) {
	for _, s := range []string{
		"https://api.github.com", "http://127.0.0.1:8080/s.sh", "https://example.com/x.sh?sig=1#f", "squid.internal:3128",
		"10.0.0.1:8080", "https://u:p@example.com/", "https://ghp_0123456789@example.com/x", "https://@example.com/",
		"https://a@b@example.com/", "http://x/a@b", "https://x?y@z", "https://x#y@z", "u:p@squid:3128", "token@squid:3128",
		"https://token@ho st/", "//tok@example.com/x", "HTTPS://U:P@EXAMPLE.COM", "https://[::1]:8080/", "ftp://u:p@x/", "",
	} {
		f.Add(s)
	}
	settings := urlSettings()
	bases := make([]RunSpec, len(settings))
	for i, st := range settings {
		var err error
		if bases[i], err = NewRunSpec(st.base); err != nil {
			f.Fatalf("%s: the base input is refused: %v", st.id, err)
		}
	}
	secrets := []string{"TOKENONLY0123", "SECRETUSER:SECRETPASS"}
	f.Fuzz(func(t *testing.T, s string) {
		for i, st := range settings {
			spec := bases[i]
			st.set(&spec, s)
			err := spec.Validate()
			if err != nil {
				var se *SettingError
				if !errors.As(err, &se) || se.Setting != st.id {
					t.Fatalf("%s %q: error %v is not a SettingError of %s", st.id, s, err, st.id)
				}
				// What the message shows of the value holds no userinfo of it
				// (unless that text is elsewhere in the value too, or is the
				// redaction marker's).
				if ui, ok := userinfo(s); ok {
					for _, part := range strings.Split(ui, ":") {
						if len(part) >= 4 && strings.Count(s, part) == 1 && !strings.Contains("xxxxx", part) && strings.Contains(se.Value, part) {
							t.Fatalf("%s %q: the error shows the credential %q: %v", st.id, s, part, err)
						}
					}
				}
				continue
			}
			if s == "" {
				continue
			}
			if ui, ok := userinfo(s); ok {
				t.Fatalf("%s accepted %q with the credentials %q", st.id, s, ui)
			}
			// The same value with credentials is refused, and the error
			// shows none of them.
			for _, cred := range secrets {
				bad := withCredentials(s, cred, st.scheme)
				spec := bases[i]
				st.set(&spec, bad)
				err := spec.Validate()
				if err == nil {
					t.Fatalf("%s accepted %q", st.id, bad)
				}
				for _, part := range strings.Split(cred, ":") {
					if strings.Contains(err.Error(), part) {
						t.Fatalf("%s %q: the error shows %s: %v", st.id, bad, part, err)
					}
				}
			}
		}
	})
}

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://example.com/x.sh", "https://example.com/x.sh"},
		{"https://ghp_token@example.com/x.sh", "https://xxxxx@example.com/x.sh"},
		{"https://u:pw@example.com/x.sh", "https://xxxxx@example.com/x.sh"},
		{"https://a@b@example.com/x@y", "https://xxxxx@y"},
		{"https://TOKEN:pa#ss@host/x", "https://xxxxx@host/x"},
		{"https://TOKEN:pa?ss@host/x?q=1", "https://xxxxx@host/x?..."},
		{"user:p/ss@squid:3128", "xxxxx@squid:3128"},
		{"https://u:p/ss@host/x", "https://xxxxx@host/x"},
		{"https://example.com/x.sh?token=abc#f", "https://example.com/x.sh?..."},
		{"https://example.com#tok@x", "https://xxxxx@x"},
		{"user:pass@squid:3128", "xxxxx@squid:3128"},
		{"https://token@ho st/", "https://xxxxx@ho st/"},
		{"//token@example.com/x", "//xxxxx@example.com/x"},
		{"example.com/s.sh", "example.com/s.sh"},
		{"https://x\n@y", "<unprintable>"},
	} {
		if got := redactURL(tc.in); got != tc.want {
			t.Errorf("redactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
