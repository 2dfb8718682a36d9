package builder

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// waitSSHBanner against servers shaped like the guests' networks: sshd
// behind passt greets only after the client sent something, slirp without
// a server accepts and closes at once.
func TestWaitSSHBanner(t *testing.T) {
	tests := []struct {
		name  string
		serve func(net.Conn)
		ok    bool
	}{
		{"greets at once", func(c net.Conn) { c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n")) }, true},
		{"greets once the client spoke (passt)", func(c net.Conn) {
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil && strings.HasPrefix(line, "SSH-2.0-") {
				c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
			}
		}, true},
		{"accepts and closes (slirp, no sshd yet)", func(net.Conn) {}, false},
		{"not SSH", func(c net.Conn) { c.Write([]byte("HTTP/1.1 400 Bad Request\r\n")) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						c.SetDeadline(time.Now().Add(5 * time.Second))
						tt.serve(c)
					}()
				}
			}()
			err = waitSSHBanner(context.Background(), l.Addr().String(), 2*time.Second, nil)
			if tt.ok && err != nil {
				t.Fatalf("waitSSHBanner = %v, want nil", err)
			}
			if !tt.ok && (!errs.Is(err, errs.KindBuild) || !strings.Contains(err.Error(), "--ssh-timeout")) {
				t.Fatalf("waitSSHBanner = %v, want a build error naming --ssh-timeout", err)
			}
		})
	}
}
