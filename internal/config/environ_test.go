package config

import "testing"

func TestGetenv(t *testing.T) {
	getenv := Getenv([]string{"OS_CLOUD=a", "EMPTY=", "NOEQUALS", "OS_CLOUD=b", "X=y=z"})
	for key, want := range map[string]string{"OS_CLOUD": "b", "EMPTY": "", "NOEQUALS": "", "X": "y=z", "MISSING": ""} {
		if got := getenv(key); got != want {
			t.Errorf("getenv(%q) = %q, want %q", key, got, want)
		}
	}
}
