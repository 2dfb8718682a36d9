package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeQMP serves one QMP connection on a unix socket: the greeting, then
// for each command the lines script returns (events first, reply last).
func fakeQMP(t *testing.T, script func(cmd map[string]any) []string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(`{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}}` + "\n"))
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var cmd map[string]any
			if json.Unmarshal(sc.Bytes(), &cmd) != nil {
				return
			}
			lines := script(cmd)
			if lines == nil {
				return // hang up
			}
			for _, line := range lines {
				c.Write([]byte(line + "\n"))
			}
		}
	}()
	return path
}

func reply(cmd map[string]any, body string) string {
	id, _ := json.Marshal(cmd["id"])
	return `{"return": ` + body + `, "id": ` + string(id) + `}`
}

func TestQMPCommandsAndEvents(t *testing.T) {
	path := fakeQMP(t, func(cmd map[string]any) []string {
		switch cmd["execute"] {
		case "qmp_capabilities":
			return []string{reply(cmd, "{}")}
		case "system_powerdown":
			return []string{
				`{"event": "POWERDOWN", "data": {}, "timestamp": {}}`,
				`{"return": {}, "id": "someone-else"}`,
				reply(cmd, "{}"),
				`{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, "timestamp": {}}`,
			}
		case "query-status":
			return []string{reply(cmd, `{"status": "running"}`)}
		case "bad":
			id, _ := json.Marshal(cmd["id"])
			return []string{`{"error": {"class": "CommandNotFound", "desc": "The command bad has not been found"}, "id": ` + string(id) + `}`}
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := dialQMP(ctx, path, make(chan struct{}))
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	if _, err := q.execute(ctx, "system_powerdown", nil); err != nil {
		t.Fatal(err)
	}
	ret, err := q.execute(ctx, "query-status", nil)
	if err != nil || !strings.Contains(string(ret), `"running"`) {
		t.Fatalf("query-status = %s, %v", ret, err)
	}
	if ev := q.lastShutdown(); ev == nil || !ev.Guest || ev.Reason != "guest-shutdown" {
		t.Errorf("SHUTDOWN event = %+v, want guest-shutdown by the guest", ev)
	}
	if _, err := q.execute(ctx, "bad", nil); err == nil || !strings.Contains(err.Error(), "CommandNotFound") {
		t.Errorf("bad command: %v, want CommandNotFound", err)
	}
	// The server hangs up on an unknown command: the caller is told, not left waiting.
	if _, err := q.execute(ctx, "hangup", nil); err == nil || !strings.Contains(err.Error(), "closed the connection") {
		t.Errorf("after hang-up: %v", err)
	}
}

func TestQMPDialGivesUpWhenQemuExits(t *testing.T) {
	gone := make(chan struct{})
	close(gone)
	_, err := dialQMP(context.Background(), filepath.Join(t.TempDir(), "never.sock"), gone)
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("dial = %v, want qemu exited", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = dialQMP(ctx, filepath.Join(t.TempDir(), "never.sock"), make(chan struct{}))
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("dial = %v, want the deadline", err)
	}
}

func TestQMPRejectsNonGreeting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte(`{"event": "STOP"}` + "\n"))
			time.Sleep(time.Second)
			c.Close()
		}
	}()
	if _, err := dialQMP(context.Background(), path, make(chan struct{})); err == nil || !strings.Contains(err.Error(), "greeting") {
		t.Fatalf("dial = %v, want a greeting error", err)
	}
}
