package manifest

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestParseDpkg(t *testing.T) {
	for _, c := range []struct {
		name, out string
		want      []Package
		err       string
	}{
		{name: "empty", out: "", want: []Package{}},
		{name: "sorted, config-files left out", out: "zlib1g\t1:1.2.13\tinstalled\nbash\t5.2.15-2+b2\tinstalled\nold\t1.0\tconfig-files\n",
			want: []Package{{"bash", "5.2.15-2+b2"}, {"zlib1g", "1:1.2.13"}}},
		{name: "foreign arch and CRLF", out: "libc6:i386\t2.36-9\tinstalled\r\n", want: []Package{{"libc6:i386", "2.36-9"}}},
		{name: "blank lines", out: "\n\na\t1\tinstalled\n\n", want: []Package{{"a", "1"}}},
		{name: "two fields", out: "a\t1\n", err: "2 fields, want 3"},
		{name: "space in version", out: "a\t1 2\tinstalled\n", err: "line 1"},
		{name: "empty name", out: "\t1\tinstalled\n", err: "empty field"},
		{name: "twice", out: "a\t1\tinstalled\na\t2\tinstalled\n", err: "listed twice"},
		{name: "dpkg-query error text", out: "dpkg-query: no packages found matching x\n", err: "1 fields"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseDpkg([]byte(c.out))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("ParseDpkg: %v, want an error with %q", err, c.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, c.want) {
				t.Fatalf("ParseDpkg = %v, %v; want %v", got, err, c.want)
			}
		})
	}
}

func TestParseSnapList(t *testing.T) {
	const list = "Name    Version        Rev    Tracking       Publisher   Notes\n" +
		"lxd     5.21.3-c5ae129  33110  5.21/stable    canonical✓  -\n" +
		"core22  20250110       1748   latest/stable  canonical✓  base\n"
	for _, c := range []struct {
		name, out string
		want      []Snap
		err       string
	}{
		{name: "no snap command", out: "", want: nil},
		{name: "two snaps, sorted", out: list, want: []Snap{{"core22", "20250110", "1748"}, {"lxd", "5.21.3-c5ae129", "33110"}}},
		{name: "header only", out: "Name  Version  Rev  Tracking  Publisher  Notes\n", want: nil},
		{name: "no header", out: "lxd 5.21 33110\n", err: "header"},
		{name: "short row", out: "Name Version Rev\nlxd 5.21\n", err: "line 2"},
		{name: "twice", out: "Name Version Rev\nlxd 1 2\nlxd 1 3\n", err: "listed twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseSnapList([]byte(c.out))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("ParseSnapList: %v, want an error with %q", err, c.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, c.want) {
				t.Fatalf("ParseSnapList = %v, %v; want %v", got, err, c.want)
			}
		})
	}
}

func TestDiff(t *testing.T) {
	m := func(pkgs ...string) Manifest {
		var out Manifest
		for i := 0; i < len(pkgs); i += 2 {
			out.Packages = append(out.Packages, Package{pkgs[i], pkgs[i+1]})
		}
		return out
	}
	for _, c := range []struct {
		name     string
		old, new Manifest
		want     []string
	}{
		{name: "same", old: m("a", "1"), new: m("a", "1"), want: nil},
		{name: "added", old: m("a", "1"), new: m("a", "1", "jq", "1.6"), want: []string{"+ jq 1.6"}},
		{name: "removed", old: m("a", "1", "b", "2"), new: m("a", "1"), want: []string{"- b 2"}},
		{name: "changed, sorted", old: m("z", "1", "a", "1.0", "m", "3"), new: m("a", "1.1", "z", "1", "b", "2"),
			want: []string{"~ a 1.0 -> 1.1", "+ b 2", "- m 3"}},
		{name: "snap revision", old: Manifest{Snaps: []Snap{{"lxd", "5.21", "1"}}}, new: Manifest{Snaps: []Snap{{"lxd", "5.21", "2"}}},
			want: []string{"~ snap:lxd 5.21 (1) -> 5.21 (2)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, ch := range Diff(c.old, c.new) {
				got = append(got, ch.String())
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("Diff = %q, want %q", got, c.want)
			}
		})
	}
}

func TestMarshalParse(t *testing.T) {
	m := Manifest{Schema: Schema, BuildID: "0123456789abcdef", Runner: Runner{Version: "2.330.0", SHA256: strings.Repeat("a", 64)},
		Packages: []Package{{"b", "2"}, {"a", "1"}}}
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(data, []byte("}\n")) || !bytes.Contains(data, []byte(`"snaps": []`)) {
		t.Fatalf("Marshal:\n%s", data)
	}
	back, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if back.Packages[0].Name != "a" || back.Runner.Version != "2.330.0" {
		t.Fatalf("Parse(Marshal) = %+v", back)
	}
	again, err := back.Marshal()
	if err != nil || !bytes.Equal(again, data) {
		t.Fatalf("Marshal(Parse(Marshal)) differs:\n%s\n%s", again, data)
	}
	for _, bad := range []string{"", "{", `{"schema": 2}`, "[1]"} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

// FuzzParseDpkg: whatever ParseDpkg accepts re-renders to dpkg-query
// output that parses back to the same packages, and every accepted
// "installed" line yields a package.
func FuzzParseDpkg(f *testing.F) {
	for _, s := range []string{"", "bash\t5.2\tinstalled\n", "libc6:i386\t2.36\tinstalled\r\nold\t1\tconfig-files\n",
		"a\t1\n", "a\t1\tinstalled\na\t2\tinstalled\n", "\t\t\n", "é\t1\tinstalled"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		ps, err := ParseDpkg(out)
		if err != nil {
			return
		}
		installed := 0
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasSuffix(strings.TrimSuffix(line, "\r"), "\tinstalled") {
				installed++
			}
		}
		if len(ps) != installed {
			t.Fatalf("%d packages from %d installed lines of %q", len(ps), installed, out)
		}
		rendered := RenderDpkg(ps)
		back, err := ParseDpkg(rendered)
		if err != nil || !reflect.DeepEqual(back, ps) {
			t.Fatalf("re-rendered %q parses to %v, %v; want %v", rendered, back, err, ps)
		}
		if !bytes.Equal(RenderDpkg(back), rendered) {
			t.Fatalf("rendering is not stable for %q", out)
		}
	})
}

// FuzzParseSnapList: every line ParseSnapList accepts after the header
// yields one snap, and nothing else does.
func FuzzParseSnapList(f *testing.F) {
	for _, s := range []string{"", "Name Version Rev Tracking Publisher Notes\nlxd 5.21 33110 5.21/stable canonical -\n",
		"lxd 1 2\n", "Name Version Rev\n\nx 1 2\nx 1 3\n", "Name Version Rev\n a\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		snaps, err := ParseSnapList(out)
		if err != nil {
			return
		}
		rows := 0
		for _, line := range strings.Split(string(out), "\n") {
			if len(strings.Fields(line)) > 0 {
				rows++
			}
		}
		if rows > 0 {
			rows-- // the header
		}
		if len(snaps) != rows {
			t.Fatalf("%d snaps from %d rows of %q", len(snaps), rows, out)
		}
		for _, s := range snaps {
			if !isToken(s.Name) || !isToken(s.Version) || !isToken(s.Revision) {
				t.Fatalf("snap %+v from %q", s, out)
			}
		}
	})
}
