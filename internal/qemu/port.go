package qemu

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// The SSH forward listens on 127.0.0.1 at a port picked at random outside
// the kernel's ephemeral range (ip_local_port_range): a port inside it may
// be taken as some outgoing connection's local port between the pick and
// qemu's bind. Start retries with another port if qemu still cannot bind.
const (
	portRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"
	lowestPort    = 10000
	pickAttempts  = 64
	minPortSpan   = 100 // a range smaller than this is not worth picking from
)

// portPicker chooses a free loopback port. Its fields are hooks for tests.
type portPicker struct {
	rangeFile string              // "" is portRangeFile
	intN      func(n int) int     // random in [0, n); nil is math/rand/v2
	free      func(port int) bool // nil tries to listen on 127.0.0.1:port
	avoid     func(port int) bool // ports already tried and refused by qemu
	readFile  func(string) ([]byte, error)
}

// pick returns a port that was free on 127.0.0.1 a moment ago.
func (p portPicker) pick() (int, error) {
	lo, hi := p.candidates()
	intN, free := p.intN, p.free
	if intN == nil {
		intN = rand.IntN
	}
	if free == nil {
		free = loopbackPortFree
	}
	for range pickAttempts {
		port := lo + intN(hi-lo+1)
		if p.avoid != nil && p.avoid(port) {
			continue
		}
		if free(port) {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port on 127.0.0.1 in %d-%d after %d tries", lo, hi, pickAttempts)
}

// candidates is the port range to pick from: below the ephemeral range if
// there is room, else above it, else everything from lowestPort up.
func (p portPicker) candidates() (lo, hi int) {
	read := p.readFile
	if read == nil {
		read = os.ReadFile
	}
	file := p.rangeFile
	if file == "" {
		file = portRangeFile
	}
	elo, ehi, err := ephemeralRange(read, file)
	switch {
	case err != nil:
		return lowestPort, 32767 // Linux's default range starts at 32768
	case elo-1-lowestPort >= minPortSpan:
		return lowestPort, elo - 1
	case 65535-(ehi+1) >= minPortSpan:
		return max(ehi+1, lowestPort), 65535
	default:
		return lowestPort, 65535
	}
}

func ephemeralRange(read func(string) ([]byte, error), file string) (lo, hi int, err error) {
	data, err := read(file)
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("%s: want two numbers, got %q", file, strings.TrimSpace(string(data)))
	}
	if lo, err = strconv.Atoi(f[0]); err != nil {
		return 0, 0, err
	}
	if hi, err = strconv.Atoi(f[1]); err != nil {
		return 0, 0, err
	}
	if lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, errors.New(file + ": not a port range")
	}
	return lo, hi, nil
}

func loopbackPortFree(port int) bool {
	l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}
