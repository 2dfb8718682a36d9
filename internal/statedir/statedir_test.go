package statedir

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// The test binary re-executes itself as a helper process (to show that
// locking holds across processes) when this variable names a role.
const helperEnv = "STATEDIR_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "ensurekey":
		// Print the key EnsureKey settles on.
		k, err := EnsureKey(context.Background(), os.Args[len(os.Args)-1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(k.AuthorizedKey)
		os.Exit(0)
	case "hold":
		// Take the lock, say so, hold it until stdin closes.
		unlock, err := Lock(context.Background(), os.Args[len(os.Args)-1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("locked")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		unlock()
		os.Exit(0)
	}
	os.Exit(2)
}

// helper starts this test binary in the given role with arg as last argument.
func helper(t *testing.T, role, arg string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", arg)
	cmd.Env = append(os.Environ(), helperEnv+"="+role)
	return cmd
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestEnsureKeyModesAndReuse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "ci")
	k, err := EnsureKey(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := mode(t, dir); got != 0o700 {
		t.Errorf("state dir mode %v, want 0700", got)
	}
	if got := mode(t, k.Path); got != 0o600 {
		t.Errorf("private key mode %v, want 0600", got)
	}
	if k.Path != filepath.Join(dir, KeyFile) {
		t.Errorf("key path %s, want %s", k.Path, filepath.Join(dir, KeyFile))
	}

	pub, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(k.AuthorizedKey))
	if err != nil {
		t.Fatalf("authorized key %q: %v", k.AuthorizedKey, err)
	}
	if pub.Type() != ssh.KeyAlgoED25519 || comment != "github-runner-image-builder@ci" {
		t.Errorf("authorized key type %s comment %q", pub.Type(), comment)
	}
	if !bytes.Equal(pub.Marshal(), k.Signer.PublicKey().Marshal()) {
		t.Error("authorized key and signer differ")
	}
	pubFile, err := os.ReadFile(filepath.Join(dir, PublicKeyFile))
	if err != nil || string(pubFile) != k.AuthorizedKey+"\n" {
		t.Errorf("%s = %q, %v; want the authorized key line", PublicKeyFile, pubFile, err)
	}
	sig, err := k.Signer.Sign(nil, []byte("challenge"))
	if err != nil || pub.Verify([]byte("challenge"), sig) != nil {
		t.Fatalf("signer does not sign for the authorized key: %v", err)
	}

	// Loosened modes are tightened again, and the same key comes back.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(k.Path, 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(k.Path)
	again, err := EnsureKey(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.AuthorizedKey != k.AuthorizedKey {
		t.Fatalf("second EnsureKey made a new key: %q, then %q", k.AuthorizedKey, again.AuthorizedKey)
	}
	if after, _ := os.ReadFile(k.Path); !bytes.Equal(before, after) {
		t.Fatal("second EnsureKey rewrote the private key")
	}
	if got := mode(t, dir); got != 0o700 {
		t.Errorf("state dir mode %v after reuse, want 0700", got)
	}
	if got := mode(t, k.Path); got != 0o600 {
		t.Errorf("private key mode %v after reuse, want 0600", got)
	}
}

func TestEnsureKeyRefusesCorruptKey(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureKey(context.Background(), dir); err == nil || !strings.Contains(err.Error(), "move it away") {
		t.Fatalf("EnsureKey on a corrupt key: %v, want an error saying what to do", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, KeyFile)); string(got) != "not a key" {
		t.Fatal("EnsureKey overwrote an existing key file")
	}
}

func TestEnsureKeyConcurrentGoroutines(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "p")
	const n = 8
	keys := make([]string, n)
	fails := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var k Key
			k, fails[i] = EnsureKey(context.Background(), dir)
			keys[i] = k.AuthorizedKey
		})
	}
	wg.Wait()
	for i := range n {
		if fails[i] != nil {
			t.Fatalf("EnsureKey %d: %v", i, fails[i])
		}
		if keys[i] != keys[0] {
			t.Fatalf("goroutines ended with different keys:\n%s\n%s", keys[0], keys[i])
		}
	}
}

func TestEnsureKeyConcurrentProcesses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "p")
	const n = 4
	cmds := make([]*exec.Cmd, n)
	outs := make([]*bytes.Buffer, n)
	for i := range n {
		cmds[i] = helper(t, "ensurekey", dir)
		outs[i] = &bytes.Buffer{}
		cmds[i].Stdout, cmds[i].Stderr = outs[i], outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if err := cmds[i].Wait(); err != nil {
			t.Fatalf("helper %d: %v: %s", i, err, outs[i])
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if outs[i].String() != string(pub) {
			t.Fatalf("process %d ended with %q, the key on disk is %q", i, outs[i], pub)
		}
	}
}

// startHolder runs a helper process that holds the lock at path until the
// returned release func is called.
func startHolder(t *testing.T, path string) (pid int, release func()) {
	t.Helper()
	cmd := helper(t, "hold", path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("holder said %q, %v", line, err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			_ = stdin.Close()
			if err := cmd.Wait(); err != nil {
				t.Errorf("holder: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return cmd.Process.Pid, release
}

func TestLockContentionReportsHolderPID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locks", "build-noble-x64.lock")
	pid, release := startHolder(t, path)

	checkLocked := func(t *testing.T, err error, kind errs.Kind) {
		t.Helper()
		var le *LockedError
		if !errors.As(err, &le) {
			t.Fatalf("error %v is not a *LockedError", err)
		}
		if le.PID != pid || le.Path != path {
			t.Fatalf("LockedError %+v, want path %s pid %d", le, path, pid)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("pid %d", pid)) {
			t.Fatalf("error %q does not name pid %d", err, pid)
		}
		if errs.KindOf(err) != kind {
			t.Fatalf("kind %v, want %v", errs.KindOf(err), kind)
		}
	}

	t.Run("TryLock", func(t *testing.T) {
		_, err := TryLock(path)
		checkLocked(t, err, errs.KindLocked)
	})
	t.Run("Lock until deadline", func(t *testing.T) {
		ctx, cancel := context.WithDeadline(context.Background(), time.Now())
		defer cancel()
		_, err := Lock(ctx, path)
		checkLocked(t, err, errs.KindLocked)
	})
	t.Run("Lock until cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := Lock(ctx, path)
		checkLocked(t, err, errs.KindInterrupted)
	})

	// Once the holder lets go, Lock gets it and records our PID.
	release()
	unlock, err := Lock(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if want := fmt.Sprintf("%d\n", os.Getpid()); string(got) != want {
		t.Fatalf("lock file holds %q, want %q", got, want)
	}
	unlock()
	unlock() // a second call is harmless
	if got := mode(t, path); got != 0o600 {
		t.Errorf("lock file mode %v, want 0600", got)
	}
}

// Within one process, two opens of the lock exclude each other too.
func TestLockExcludesGoroutines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l")
	unlock, err := TryLock(path)
	if err != nil {
		t.Fatal(err)
	}
	var le *LockedError
	if _, err := TryLock(path); !errors.As(err, &le) || le.PID != os.Getpid() {
		t.Fatalf("second TryLock: %v, want locked by pid %d", err, os.Getpid())
	}
	unlock()

	var inside, total atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5 {
				unlock, err := Lock(context.Background(), path)
				if err != nil {
					t.Error(err)
					return
				}
				total.Add(1)
				if n := inside.Add(1); n != 1 {
					t.Errorf("%d holders at once", n)
				}
				if _, err := TryLock(path); !errs.Is(err, errs.KindLocked) {
					t.Errorf("TryLock while held: %v, want locked", err)
				}
				runtime.Gosched()
				inside.Add(-1)
				unlock()
			}
		})
	}
	wg.Wait()
	if n := total.Load(); n != 40 {
		t.Fatalf("%d entries, want 40", n)
	}
}
