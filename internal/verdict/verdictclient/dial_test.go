package verdictclient

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestAttackDialRetriesFullBacklog: a connection flood keeps the
// service's listen backlog full, and a non-blocking connect then fails
// with EAGAIN at once; Dial retries it, so a hook's Engage waits for its
// turn instead of failing the container (issue 9, item 2).
func TestAttackDialRetriesFullBacklog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	// Fill the backlog.
	var fillers []net.Conn
	defer func() {
		for _, c := range fillers {
			c.Close()
		}
	}()
	for {
		c, err := net.Dial("unix", path)
		if errors.Is(err, syscall.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		fillers = append(fillers, c)
		if len(fillers) > 8 {
			t.Fatal("the backlog never filled")
		}
	}
	// Room appears a little later.
	go func() {
		time.Sleep(50 * time.Millisecond)
		for i := 0; i < len(fillers)+1; i++ {
			nfd, _, err := unix.Accept(fd)
			if err != nil {
				return
			}
			defer unix.Close(nfd)
		}
		time.Sleep(time.Second)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := retryDialer(func(ctx context.Context, path string) (net.Conn, error) {
		return net.Dial("unix", path)
	}).DialContext(ctx, "unix", path)
	if err != nil {
		t.Fatalf("dial with a full backlog: %v", err)
	}
	c.Close()

	// A socket nobody listens on fails at once.
	if _, err := Dial(ctx, filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("Dial of a missing socket succeeded")
	}
}
