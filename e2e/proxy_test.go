package e2e

import (
	"bufio"
	"io"
	"net"
	"strings"
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

// comQuery frames sql as a MySQL COM_QUERY packet (sequence 0).
func comQuery(sql string) []byte {
	n := len(sql) + 1
	return append([]byte{byte(n), byte(n >> 8), byte(n >> 16), 0, 0x03}, sql...)
}

// A fault armed on a statement fires once, on the first matching statement, after the
// server received it and before the client sees the answer; LoseFIN then keeps the
// server's side open when the client gives up during the cut.
func TestProxyTriggerOnStatementAndLostFIN(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	received := make(chan string, 10)
	serverEOF := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			var hdr [4]byte
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				close(serverEOF)
				return
			}
			body := make([]byte, int(hdr[0])|int(hdr[1])<<8|int(hdr[2])<<16)
			if _, err := io.ReadFull(r, body); err != nil {
				close(serverEOF)
				return
			}
			received <- string(body[1:])
			c.Write([]byte("ok\n"))
		}
	}()
	p, err := NewProxy(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	fired := make(chan string, 2)
	p.Arm(func(q string) bool { return strings.Contains(q, "FOR UPDATE") }, func() {
		fired <- <-received // the server has the statement by now
		p.LoseFIN()
		p.Cut()
	})
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	ask := func(sql string) error {
		if _, err := c.Write(comQuery(sql)); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := r.ReadString('\n')
		return err
	}
	if err := ask("SELECT 1"); err != nil {
		t.Fatalf("a statement that does not match: %v", err)
	}
	<-received
	if len(fired) != 0 {
		t.Fatal("the trigger fired on a statement that does not match")
	}
	if err := ask("SELECT x FROM t FOR UPDATE"); !isTimeout(err) {
		t.Fatalf("the matching statement's answer reached the client (%v): want it swallowed by the cut", err)
	}
	select {
	case q := <-fired:
		if q != "SELECT x FROM t FOR UPDATE" {
			t.Fatalf("fired after the server received %q", q)
		}
	default:
		t.Fatal("the trigger did not fire")
	}
	c.Close() // the client gives up; its FIN is lost in the cut
	select {
	case <-serverEOF:
		t.Fatal("the server saw the client's close through the cut")
	case <-time.After(300 * time.Millisecond):
	}
	p.Heal()
	select {
	case <-serverEOF:
	case <-time.After(2 * time.Second):
		t.Fatal("Heal did not close the held server connection")
	}
}
