package baseimage

import (
	"maps"
	"strings"
	"testing"
)

var (
	digestA = strings.Repeat("0123456789abcdef", 4)
	digestB = strings.Repeat("fedcba9876543210", 4)
)

func TestParseSHA256SUMS(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		wantErr string
	}{
		{name: "ubuntu binary mode", in: digestA + " *noble-server-cloudimg-amd64.img\n" + digestB + " *noble-server-cloudimg-arm64.img\n",
			want: map[string]string{"noble-server-cloudimg-amd64.img": digestA, "noble-server-cloudimg-arm64.img": digestB}},
		{name: "text mode, CRLF, blank lines, upper case", in: "\r\n" + strings.ToUpper(digestA) + "  a.img\r\n\n",
			want: map[string]string{"a.img": digestA}},
		{name: "name with spaces", in: digestA + " *my image.img", want: map[string]string{"my image.img": digestA}},
		{name: "same entry twice", in: digestA + " *a.img\n" + digestA + " *a.img\n", want: map[string]string{"a.img": digestA}},
		{name: "empty", in: "", want: map[string]string{}},
		{name: "conflicting entries", in: digestA + " *a.img\n" + digestB + " *a.img\n", wantErr: "twice"},
		{name: "short digest", in: digestA[:63] + " *a.img\n", wantErr: "line 1"},
		{name: "not hex", in: "g" + digestA[1:] + " *a.img\n", wantErr: "line 1"},
		{name: "no name", in: digestA + " *\n", wantErr: "line 1"},
		{name: "path in name", in: digestA + " *../a.img\n", wantErr: "line 1"},
		{name: "control character in name", in: digestA + " *a.img\r\r\n", wantErr: "line 1"},
		{name: "one space only", in: digestA + " a.img\n", wantErr: "line 1"},
		{name: "garbage on line 2", in: digestA + " *a.img\n<html>\n", wantErr: "line 2"},
		{name: "too large", in: strings.Repeat("x", maxSumsSize+1), wantErr: "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSHA256SUMS([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// FuzzParseSHA256SUMS checks that the parser never panics and that what it
// accepts is well formed and survives a round trip through sha256sum's format.
func FuzzParseSHA256SUMS(f *testing.F) {
	f.Add([]byte(digestA + " *noble-server-cloudimg-amd64.img\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sums, err := ParseSHA256SUMS(data)
		if err != nil {
			return
		}
		var b strings.Builder
		for name, digest := range sums {
			if !isHexDigest(digest) {
				t.Fatalf("digest %q of %q is not lower-case hex", digest, name)
			}
			if name == "" || strings.ContainsAny(name, "/\x00\r\n\t") {
				t.Fatalf("accepted file name %q", name)
			}
			b.WriteString(digest + " *" + name + "\n")
		}
		again, err := ParseSHA256SUMS([]byte(b.String()))
		if err != nil {
			t.Fatalf("re-parsing %q: %v", b.String(), err)
		}
		if !maps.Equal(sums, again) {
			t.Fatalf("round trip changed %v into %v", sums, again)
		}
	})
}
