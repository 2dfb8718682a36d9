package qemu

import (
	"errors"
	"net"
	"strconv"
	"testing"
)

func TestPortCandidates(t *testing.T) {
	tests := []struct {
		name   string
		file   string
		err    error
		lo, hi int
	}{
		{"linux default", "32768\t60999\n", nil, 10000, 32767},
		{"range starts low: above it", "1024 60999", nil, 61000, 65535},
		{"whole range ephemeral", "1024 65535", nil, 10000, 65535},
		{"unreadable", "", errors.New("no /proc"), 10000, 32767},
		{"garbage", "abc", nil, 10000, 32767},
		{"reversed", "60999 32768", nil, 10000, 32767},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := portPicker{readFile: func(string) ([]byte, error) { return []byte(tt.file), tt.err }}
			lo, hi := p.candidates()
			if lo != tt.lo || hi != tt.hi {
				t.Errorf("candidates = %d-%d, want %d-%d", lo, hi, tt.lo, tt.hi)
			}
		})
	}
}

func TestPortPickSkipsTakenAndAvoided(t *testing.T) {
	seq := []int{0, 1, 2, 3}
	i := 0
	p := portPicker{
		readFile: func(string) ([]byte, error) { return []byte("32768 60999"), nil },
		intN:     func(int) int { v := seq[i%len(seq)]; i++; return v },
		free:     func(port int) bool { return port != 10000 && port != 10002 },
		avoid:    func(port int) bool { return port == 10001 },
	}
	got, err := p.pick()
	if err != nil || got != 10003 {
		t.Fatalf("pick = %d, %v; want 10003 (10000 taken, 10001 avoided, 10002 taken)", got, err)
	}
	none := portPicker{free: func(int) bool { return false }}
	if _, err := none.pick(); err == nil {
		t.Fatal("pick succeeded with no free port")
	}
}

// The real picker returns a port outside the ephemeral range that can be
// bound on 127.0.0.1, and never a port held by a listener.
func TestPortPickReal(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	held := l.Addr().(*net.TCPAddr).Port
	if loopbackPortFree(held) {
		t.Fatalf("port %d is held by a listener but reported free", held)
	}
	lo, hi := portPicker{}.candidates()
	for range 20 {
		port, err := portPicker{}.pick()
		if err != nil {
			t.Fatal(err)
		}
		if port < lo || port > hi || port < lowestPort {
			t.Fatalf("port %d outside %d-%d", port, lo, hi)
		}
		ln, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatalf("picked port %d cannot be bound: %v", port, err)
		}
		ln.Close()
	}
}
