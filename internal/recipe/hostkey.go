package recipe

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/textproto"
	"regexp"
	"strings"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// HostKey is the SSH host key WithHostKey hands the guest. The private key
// is a secret: the user-data carrying it lives only as long as the builder
// (Nova's metadata service serves it for the server's life), and the clean
// step removes the key from the guest before the image is made.
type HostKey struct {
	PrivateKeyPEM []byte // OpenSSH format ("-----BEGIN OPENSSH PRIVATE KEY-----")
	PublicKey     string // "ssh-ed25519 AAAA..." on one line
}

// hostKeyPartName is the file name cloud-init sees for the host key part.
const hostKeyPartName = "grib-host-key.cfg"

var (
	publicKeyRE  = regexp.MustCompile(`^ssh-ed25519 [A-Za-z0-9+/]+={0,2}( [!-~]+)?$`)
	privateKeyRE = regexp.MustCompile(`^-----BEGIN OPENSSH PRIVATE KEY-----\n([A-Za-z0-9+/=]+\n)+-----END OPENSSH PRIVATE KEY-----\n?$`)
)

// WithHostKey returns the user-data a guest boots with: a multipart/mixed
// MIME message whose first part is a text/cloud-config that sets the guest's
// SSH host key (ssh_keys: cloud-init then writes only this key and makes no
// others), and whose second part is userData as it was, with the content
// type cloud-init gives it (a script, a cloud-config, a boothook, gzip, a
// MIME message of its own...). cloud-init merges the cloud-config parts;
// by its default merge rules the first part's ssh_keys wins over one in
// userData. userData may be the built-in recipe or a --user-data file.
func WithHostKey(userData []byte, key HostKey) ([]byte, error) {
	pub := strings.TrimSpace(key.PublicKey)
	if !publicKeyRE.MatchString(pub) {
		return nil, errs.New(errs.KindInternal, "the guest's SSH host key: %q is not one ssh-ed25519 public key", pub)
	}
	if !privateKeyRE.Match(key.PrivateKeyPEM) {
		return nil, errs.New(errs.KindInternal, "the guest's SSH host key: not an OpenSSH private key")
	}
	var cfg bytes.Buffer
	cfg.WriteString("#cloud-config\n")
	cfg.WriteString("# The build's SSH host key, made for this build only: the builder pins it.\n")
	cfg.WriteString("# The clean step removes it; the image's first boot makes new host keys.\n")
	cfg.WriteString("ssh_deletekeys: true\n")
	cfg.WriteString("ssh_keys:\n  ed25519_private: |\n")
	for line := range strings.Lines(string(key.PrivateKeyPEM)) {
		cfg.WriteString("    " + strings.TrimRight(line, "\n") + "\n")
	}
	q, _ := json.Marshal(pub) // a JSON string is a YAML string
	fmt.Fprintf(&cfg, "  ed25519_public: %s\n", q)

	boundary := mimeBoundary(userData, cfg.Bytes())
	var out bytes.Buffer
	fmt.Fprintf(&out, "Content-Type: multipart/mixed; boundary=%q\r\nMIME-Version: 1.0\r\n\r\n", boundary)
	w := multipart.NewWriter(&out)
	if err := w.SetBoundary(boundary); err != nil {
		return nil, errs.Wrap(errs.KindInternal, err, "user-data MIME boundary")
	}
	if err := writePart(w, textproto.MIMEHeader{
		"Content-Type":              {`text/cloud-config; charset="us-ascii"`},
		"Content-Transfer-Encoding": {"7bit"},
		"Content-Disposition":       {fmt.Sprintf("attachment; filename=%q", hostKeyPartName)},
	}, cfg.Bytes()); err != nil {
		return nil, err
	}
	if len(userData) > 0 {
		header, body, err := userDataPart(userData)
		if err != nil {
			return nil, err
		}
		if err := writePart(w, header, body); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, errs.Wrap(errs.KindInternal, err, "user-data MIME message")
	}
	return out.Bytes(), nil
}

func writePart(w *multipart.Writer, h textproto.MIMEHeader, body []byte) error {
	pw, err := w.CreatePart(h)
	if err == nil {
		_, err = pw.Write(body)
	}
	if err != nil {
		return errs.Wrap(errs.KindInternal, err, "user-data MIME part")
	}
	return nil
}

// mimeBoundary is a boundary that none of the parts contains; it is derived
// from them, so one input always renders the same.
func mimeBoundary(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
	}
	sum := h.Sum(nil)
	for i := 0; ; i++ {
		b := fmt.Sprintf("==grib-%s-%d==", hex.EncodeToString(sum[:12]), i)
		clash := false
		for _, p := range parts {
			clash = clash || bytes.Contains(p, []byte(b))
		}
		if !clash {
			return b
		}
	}
}

// startTypes is cloud-init's table of user-data types by their first line
// (longest first, where one starts with another).
var startTypes = []struct{ prefix, ctype string }{
	{"#include-once", "text/x-include-once-url"},
	{"#include", "text/x-include-url"},
	{"#!", "text/x-shellscript"},
	{"#cloud-config-archive", "text/cloud-config-archive"},
	{"#cloud-config-jsonp", "text/cloud-config-jsonp"},
	{"#cloud-config", "text/cloud-config"},
	{"#upstart-job", "text/upstart-job"},
	{"#part-handler", "text/part-handler"},
	{"#cloud-boothook", "text/cloud-boothook"},
	{"## template: jinja", "text/jinja2"},
}

// userDataPart is the MIME part that carries userData unchanged: its
// content type from its start, as cloud-init would tell it; plain ASCII as
// it is, anything else base64-encoded; a MIME message of its own as a
// nested part (its headers become the part's).
func userDataPart(userData []byte) (textproto.MIMEHeader, []byte, error) {
	h := textproto.MIMEHeader{"Content-Disposition": {`attachment; filename="user-data"`}}
	if isMIME(userData) {
		r := textproto.NewReader(bufio.NewReader(bytes.NewReader(userData)))
		nested, err := r.ReadMIMEHeader()
		if err != nil {
			return nil, nil, errs.Usage("--user-data: it starts like a MIME message but its headers do not parse: %v", err)
		}
		body, err := io.ReadAll(r.R)
		if err != nil {
			return nil, nil, errs.Wrap(errs.KindInternal, err, "reading the user-data's MIME body")
		}
		return nested, body, nil
	}
	ctype := "text/plain" // cloud-init looks at the content of a text/plain part again
	switch {
	case bytes.HasPrefix(userData, []byte{0x1f, 0x8b}):
		ctype = "application/x-gzip"
	default:
		for _, s := range startTypes {
			if bytes.HasPrefix(userData, []byte(s.prefix)) {
				ctype = s.ctype
				break
			}
		}
	}
	if isASCII(userData) {
		h.Set("Content-Type", ctype+`; charset="us-ascii"`)
		h.Set("Content-Transfer-Encoding", "7bit")
		return h, userData, nil
	}
	if strings.HasPrefix(ctype, "text/") {
		ctype += `; charset="utf-8"`
	}
	h.Set("Content-Type", ctype)
	h.Set("Content-Transfer-Encoding", "base64")
	return h, base64Lines(userData), nil
}

func isMIME(data []byte) bool {
	head := strings.ToLower(string(data[:min(len(data), 64)]))
	return strings.HasPrefix(head, "content-type:") || strings.HasPrefix(head, "mime-version:")
}

func isASCII(data []byte) bool {
	for _, c := range data {
		if c == 0 || c >= 0x80 || (c < 0x20 && c != '\n' && c != '\t' && c != '\r') {
			return false
		}
	}
	return true
}

// base64Lines is data in base64, 76 characters a line (RFC 2045).
func base64Lines(data []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(data)
	var b bytes.Buffer
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\n")
	return b.Bytes()
}
