package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/clock"
)

// The block cloud-init's keys_to_console module writes to the serial console.
const (
	hostKeysBegin = "-----BEGIN SSH HOST KEY KEYS-----"
	hostKeysEnd   = "-----END SSH HOST KEY KEYS-----"
)

// ConsoleHostKeys returns the SSH host keys that cloud-init printed on a
// console, from the last complete BEGIN/END SSH HOST KEY KEYS block. Lines may
// carry a prefix (a syslog tag, a timestamp); each key is read from its type
// word on. It fails when there is no complete block or the block holds no key.
func ConsoleHostKeys(console string) ([]ssh.PublicKey, error) {
	end := strings.LastIndex(console, hostKeysEnd)
	if end < 0 {
		return nil, errors.New("no SSH host key block on the console yet")
	}
	begin := strings.LastIndex(console[:end], hostKeysBegin)
	if begin < 0 {
		return nil, errors.New("SSH host key block on the console has no BEGIN line")
	}
	var keys []ssh.PublicKey
	for _, line := range strings.Split(console[begin+len(hostKeysBegin):end], "\n") {
		if k := keyInLine(line); k != nil {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("SSH host key block on the console holds no key")
	}
	return keys, nil
}

// keyInLine parses the first "type base64 [comment]" key found in line.
func keyInLine(line string) ssh.PublicKey {
	fields := strings.Fields(line)
	for i := 0; i+1 < len(fields); i++ {
		if k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(fields[i] + " " + fields[i+1])); err == nil {
			return k
		}
	}
	return nil
}

// WaitConsoleHostKeys polls a server's console output until cloud-init has
// printed its SSH host keys, and returns them with the console text.
func WaitConsoleHostKeys(ctx context.Context, compute *gophercloud.ServiceClient, id string) ([]ssh.PublicKey, string, error) {
	for {
		out, err := servers.ShowConsoleOutput(ctx, compute, id, servers.ShowConsoleOutputOpts{}).Extract()
		if err != nil {
			return nil, "", fmt.Errorf("testenv: console of server %s: %w", id, err)
		}
		keys, perr := ConsoleHostKeys(out)
		if perr == nil {
			return keys, out, nil
		}
		if err := clock.Sleep(ctx, 3*time.Second); err != nil {
			return nil, out, fmt.Errorf("testenv: server %s: %v: %w", id, perr, err)
		}
	}
}

// DialGuest connects over SSH to addr (host:port) as user with signer,
// accepting only the given host keys. It retries until ctx ends: while sshd
// is not up, qemu's user network accepts the TCP connection and resets it.
func DialGuest(ctx context.Context, addr, user string, signer ssh.Signer, hostKeys []ssh.PublicKey) (*ssh.Client, error) {
	cfg := &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: fixedHostKeys(hostKeys),
		Timeout:         15 * time.Second,
	}
	for {
		client, err := dialSSH(ctx, addr, cfg)
		if err == nil {
			return client, nil
		}
		if werr := clock.Sleep(ctx, 2*time.Second); werr != nil {
			return nil, fmt.Errorf("testenv: ssh %s@%s: %v: %w", user, addr, err, werr)
		}
	}
}

func dialSSH(ctx context.Context, addr string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// Bound the handshake too; the deadline is cleared once it is done.
	if err := conn.SetDeadline(time.Now().Add(cfg.Timeout)); err != nil {
		conn.Close()
		return nil, err
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		c.Close()
		return nil, err
	}
	return ssh.NewClient(c, chans, reqs), nil
}

// fixedHostKeys accepts exactly the given keys.
func fixedHostKeys(keys []ssh.PublicKey) ssh.HostKeyCallback {
	return func(hostname string, _ net.Addr, key ssh.PublicKey) error {
		for _, k := range keys {
			if bytes.Equal(k.Marshal(), key.Marshal()) {
				return nil
			}
		}
		return fmt.Errorf("testenv: host key %s of %s is not one the console showed", ssh.FingerprintSHA256(key), hostname)
	}
}

// Run runs cmd in a new session on client and returns its combined output.
func Run(ctx context.Context, client *ssh.Client, cmd string) (string, error) {
	sess, err := client.NewSession()
	if err != nil {
		return "", fmt.Errorf("testenv: ssh session: %w", err)
	}
	defer sess.Close()
	// One writer for both streams, behind a lock: x/crypto/ssh copies stdout
	// and stderr in two goroutines, and two concurrent ReadFrom calls on one
	// bytes.Buffer lose or zero each other's bytes (seen: empty output from
	// a successful `echo`).
	var out LockedBuffer
	sess.Stdout, sess.Stderr = &out, &out
	done := make(chan error, 1)
	go func() { done <- sess.Run(cmd) }()
	select {
	case err := <-done:
		if err != nil {
			return out.String(), fmt.Errorf("testenv: ssh %q: %w", cmd, err)
		}
		return out.String(), nil
	case <-ctx.Done():
		_ = sess.Close() // the output buffer may still be written to: not returned
		return "", fmt.Errorf("testenv: ssh %q: %w", cmd, ctx.Err())
	}
}

// LockedBuffer is a bytes.Buffer safe for concurrent writers (exec's
// copying goroutines, a build's progress, a test reading it meanwhile). It
// has no ReadFrom, so io.Copy writes to it through Write only.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// FixedIPv4 returns the server's first IPv4 address on network.
func FixedIPv4(s *servers.Server, network string) (string, error) {
	addrs, ok := s.Addresses[network].([]any)
	if !ok {
		return "", fmt.Errorf("testenv: server %s has no address on %s", s.ID, network)
	}
	for _, a := range addrs {
		m, _ := a.(map[string]any)
		ip, _ := m["addr"].(string)
		if v, _ := m["version"].(float64); v == 4 && ip != "" {
			return ip, nil
		}
	}
	return "", fmt.Errorf("testenv: server %s has no IPv4 address on %s", s.ID, network)
}
