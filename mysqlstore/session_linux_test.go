package mysqlstore

import (
	"context"
	"net"
	"syscall"
	"testing"
)

// The store's dialer turns keepalive on with its short timings (Linux socket options).
func TestDialKeepAliveSetsSocketOptions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := dialKeepAlive(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var on, idle, intvl, cnt int
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		get := func(level, opt int) int {
			v, err := syscall.GetsockoptInt(int(fd), level, opt)
			if err != nil && gerr == nil {
				gerr = err
			}
			return v
		}
		on = get(syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
		idle = get(syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
		intvl = get(syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL)
		cnt = get(syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	if on == 0 || idle != int(keepAlive.Idle.Seconds()) || intvl != int(keepAlive.Interval.Seconds()) || cnt != keepAlive.Count {
		t.Fatalf("keepalive on=%d idle=%ds interval=%ds count=%d; want on, %v, %v, %d", on, idle, intvl, cnt, keepAlive.Idle, keepAlive.Interval, keepAlive.Count)
	}
}
