package testenv

import "encoding/base64"

// SecretForms returns the forms in which a test's script secret can show up
// where it must not: the value itself; its standard base64 encoding, which
// is how it travels to the guest (on the script session's stdin, one
// "NAME base64" line per secret); and, for the value inside a longer base64
// stream (user-data, which Nova carries base64-encoded, or a cloud-init
// write_files entry), the part of its encoding at each of the three byte
// alignments that depends on the value alone. A scan that finds none of
// them found no copy of the secret. The value should be long (16 bytes or
// more) so the inner parts are too.
func SecretForms(secret string) []string {
	forms := []string{secret, base64.StdEncoding.EncodeToString([]byte(secret))}
	for k := range 3 {
		// k bytes before the value: the first group of 4 characters mixes
		// them in (unless k is 0), the last one mixes in what follows.
		enc := base64.StdEncoding.EncodeToString(append(make([]byte, k), secret...))
		start := 0
		if k > 0 {
			start = 4
		}
		if end := len(enc) - 4; end-start >= 8 {
			forms = append(forms, enc[start:end])
		}
	}
	return forms
}
