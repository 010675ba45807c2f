package e2e

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// The proxy's cut must be a black hole (no reply, no reset) and its heal must let new
// connections through again.
func TestProxyCutAndHeal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }() // echo
		}
	}()
	p, err := NewProxy(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	echo := func(c net.Conn) error {
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := bufio.NewReader(c).ReadString('\n')
		return err
	}
	c1, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if err := echo(c1); err != nil {
		t.Fatalf("echo through the proxy: %v", err)
	}
	p.Cut()
	if err := echo(c1); !isTimeout(err) {
		t.Fatalf("echo on an open connection during the cut: %v, want a timeout (black hole)", err)
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatalf("dial during the cut: %v (want accepted, then silence)", err)
	}
	defer c2.Close()
	if err := echo(c2); !isTimeout(err) {
		t.Fatalf("echo on a new connection during the cut: %v, want a timeout", err)
	}
	p.Heal()
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if err := echo(c3); err != nil {
		t.Fatalf("echo after heal: %v", err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
