package cli

import (
	"strings"
	"testing"
)

func TestSecondInterruptMessage(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		environ []string
		want    string
	}{
		{"flags", []string{"--os-cloud", "prod", "run", "img", "--prefix", "ci1"}, nil,
			"github-runner-image-builder --os-cloud prod sweep --prefix ci1 --older-than 1m --dry-run"},
		{"equals form and OS_CLOUD", []string{"run", "img", "--prefix=ci2"}, []string{"OS_CLOUD=build"},
			"github-runner-image-builder --os-cloud build sweep --prefix ci2 --older-than 1m --dry-run"},
		{"flag wins over OS_CLOUD", []string{"--os-cloud=a", "run", "img"}, []string{"OS_CLOUD=b"},
			"--os-cloud a sweep --prefix '' --older-than"},
		{"quoted for the shell", []string{"--os-cloud", "my cloud", "run", "x"}, nil,
			"--os-cloud 'my cloud' sweep"},
		{"after -- is an argument", []string{"run", "--", "--prefix", "x"}, nil, "sweep --prefix ''"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SecondInterruptMessage(tt.args, tt.environ, nil)
			if !strings.Contains(got, tt.want) {
				t.Errorf("message %q lacks %q", got, tt.want)
			}
			if strings.Contains(got, "\n") || !strings.HasPrefix(got, "Error: ") {
				t.Errorf("want one Error: line, got %q", got)
			}
		})
	}
}

func TestSecondInterruptMessageNamesWhatIsLeft(t *testing.T) {
	left := []string{"server p-image-builder-noble-x64 (s1) in cloud it-a", "file /tmp/grib-snapshot-1.img"}
	got := SecondInterruptMessage([]string{"run", "x", "--prefix", "p"}, nil, left)
	for _, want := range append(left, "left: ", "sweep --prefix p") {
		if !strings.Contains(got, want) {
			t.Errorf("message %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "may be left") || strings.Contains(got, "\n") {
		t.Errorf("message %q: want one line naming what is left, not a guess", got)
	}
}
