package helix

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
)

// addProcess starts one more process with node id id (a fresh nonce from crypto/rand, this
// host and pid), with the given options, and returns its index.
func (c *testCluster) addProcess(id string, opts ...Option) int {
	c.t.Helper()
	c.addWith(Config{NodeID: id}, c.tr.handler(fmt.Sprintf("%s/%d", id, len(c.nodes))), opts...)
	return len(c.nodes) - 1
}

func (c *testCluster) runErr(i int) error {
	err := <-c.done[i]
	c.done[i] <- err
	return err
}

// A second process started with the id of a live node: Run returns an error naming the
// id, the holder's host and pid and the expiry, and the first process is untouched.
func TestDuplicateProcessRefused(t *testing.T) {
	c := newTestCluster(t, 2, tl12)
	c.until("balanced", 20*time.Second, func() bool { return balanced(c.tr.owners(), map[string]int{"n1": 6, "n2": 6}) })
	inc := c.nodes[0].State().Incarnation
	dup := c.addProcess("n1")
	c.until("the duplicate's Run to return", 15*time.Second, func() bool { return c.exited[dup] })
	err := c.runErr(dup)
	host, _ := os.Hostname()
	if !errors.Is(err, engine.ErrNodeInUse) {
		t.Fatalf("Run: %v, want ErrNodeInUse", err)
	}
	for _, want := range []string{`"n1"`, "host " + host, fmt.Sprintf("pid %d", os.Getpid()), "expires in", "--replace"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %s", err, want)
		}
	}
	if s := c.nodes[0].State(); s.Incarnation != inc || !s.Registered || s.Draining {
		t.Errorf("the first process: %+v; want incarnation %d, registered, not draining", s, inc)
	}
	if c.exited[0] {
		t.Error("the first process stopped")
	}
	c.tr.check(t)
}

// WithReplace takes the id over: the old process's Run returns an error saying it was
// replaced, the new one processes the partitions, nothing is processed twice.
func TestReplaceTakesOver(t *testing.T) {
	c := newTestCluster(t, 2, tl12)
	c.until("balanced", 20*time.Second, func() bool { return balanced(c.tr.owners(), map[string]int{"n1": 6, "n2": 6}) })
	nw := c.addProcess("n1", WithReplace())
	c.until("the old process's Run to return", 15*time.Second, func() bool { return c.exited[0] })
	if err := c.runErr(0); !errors.Is(err, engine.ErrNodeInUse) || !strings.Contains(err.Error(), "replaced") {
		t.Fatalf("old Run: %v, want ErrNodeInUse saying it was replaced", err)
	}
	c.until("the new process to take its share", 20*time.Second, func() bool {
		return balanced(c.tr.owners(), map[string]int{fmt.Sprintf("n1/%d", nw): 6, "n2": 6})
	})
	if s := c.nodes[nw].State(); s.Incarnation != 2 || s.Draining {
		t.Errorf("new process: %+v, want incarnation 2, not draining", s)
	}
	c.tr.check(t)
}
