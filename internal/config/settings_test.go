package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Every row of Settings names a RunSpec field, and IDs, flags and keys are
// unique: a refusal can be spelled in both front ends.
func TestSettingsTable(t *testing.T) {
	ids, flags, keys := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, s := range Settings() {
		v := reflect.ValueOf(RunSpec{})
		for part := range strings.SplitSeq(s.Field, ".") {
			if v = v.FieldByName(part); !v.IsValid() {
				t.Errorf("setting %s: RunSpec has no field %s", s.ID, s.Field)
				break
			}
		}
		if !strings.HasPrefix(s.Flag, "--") {
			t.Errorf("setting %s: flag %q", s.ID, s.Flag)
		}
		for _, u := range []struct {
			seen map[string]bool
			v    string
		}{{ids, s.ID}, {flags, s.Flag}, {keys, s.Key}} {
			if u.v != "" && u.seen[u.v] {
				t.Errorf("setting %s: %q is listed twice", s.ID, u.v)
			}
			u.seen[u.v] = true
		}
	}
}

func TestSettingErrorSpellings(t *testing.T) {
	s := goodInput()
	s.SkipDefaultChecks = true
	_, err := NewRunSpec(s)
	var se *SettingError
	if !errors.As(err, &se) || !errs.Is(err, errs.KindUsage) {
		t.Fatalf("NewRunSpec: %v, want a usage *SettingError", err)
	}
	if got, want := err.Error(), "--skip-default-checks: needs --user-data (the built-in recipe is always verified) and --verify-script (an image is never published unverified)"; got != want {
		t.Errorf("flag spelling %q, want %q", got, want)
	}
	if got, want := se.Spell(KeyOf), "skip_default_checks: needs user_data_file (the built-in recipe is always verified) and verify_script_file (an image is never published unverified)"; got != want {
		t.Errorf("key spelling %q, want %q", got, want)
	}
	s = goodInput()
	s.KeepRevisions = 100
	_, err = NewRunSpec(s)
	if !errors.As(err, &se) || se.Setting != "keep_revisions" || se.Detail(KeyOf) != "100: keep from 1 to 99 revisions (the new image counts as one)" {
		t.Errorf("keep 100: %v", err)
	}
}
