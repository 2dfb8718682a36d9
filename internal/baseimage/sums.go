package baseimage

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// maxSumsSize bounds SHA256SUMS and SHA256SUMS.gpg: the real ones are a few
// KiB; anything much larger is not what we asked for.
const maxSumsSize = 1 << 20

// ParseSHA256SUMS parses a checksum file in the format sha256sum writes:
// one "<64 hex digits> *<file>" (binary mode, what Ubuntu publishes) or
// "<64 hex digits>  <file>" (text mode) per line. It returns file name →
// lower-case hex digest. Blank lines are skipped; any other line that does not
// fit, or a file listed twice with different digests, is an error (the file
// is signed, so damage means something is wrong, not something to skip).
func ParseSHA256SUMS(data []byte) (map[string]string, error) {
	if len(data) > maxSumsSize {
		return nil, fmt.Errorf("SHA256SUMS is %d bytes, more than the %d allowed", len(data), maxSumsSize)
	}
	sums := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxSumsSize)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text() // ScanLines drops the "\r" of a CRLF
		if strings.TrimSpace(line) == "" {
			continue
		}
		digest, name, ok := splitSumsLine(line)
		if !ok {
			return nil, fmt.Errorf("SHA256SUMS line %d is not \"<sha256> *<file>\": %.80q", n, line)
		}
		if prev, dup := sums[name]; dup && prev != digest {
			return nil, fmt.Errorf("SHA256SUMS lists %q twice with different digests", name)
		}
		sums[name] = digest
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading SHA256SUMS: %w", err)
	}
	return sums, nil
}

// splitSumsLine splits one line into its lower-case digest and file name.
func splitSumsLine(line string) (digest, name string, ok bool) {
	if len(line) < 64+2+1 || line[64] != ' ' || (line[65] != '*' && line[65] != ' ') {
		return "", "", false
	}
	digest, name = strings.ToLower(line[:64]), line[66:]
	if !isHexDigest(digest) || name == "" || strings.ContainsRune(name, '/') {
		return "", "", false
	}
	for _, c := range []byte(name) {
		if c < 0x20 || c == 0x7f {
			return "", "", false
		}
	}
	return digest, name, true
}

// isHexDigest reports whether s is a lower-case hex SHA-256 digest.
func isHexDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
