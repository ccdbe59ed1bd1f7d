// A Go TCP server for tests/cgroup.rs (tests/go/cmdserver.go), built static (CGO_ENABLED=0): what `keepalive set
// --cgroup` must reach. It waits for commands on stdin so that the test can move it into a
// cgroup before it makes any socket (a socket belongs to the cgroup of the task that created
// it, an accepted one to its listener's):
//
//	listen  listen on 127.0.0.1, a free port, with net.Listen (Go turns keepalive on with
//	        15 s idle and interval on every accepted connection); prints the port; again,
//	        another listener beside the first
//	dial    dial one connection to the latest listener with net.Dial (Go's Dialer sets 15 s
//	        too) and keep it; prints its local port
//	show    one line per connection it holds, dialed or accepted, as the process itself reads
//	        it: "local-port peer-port SO_KEEPALIVE TCP_KEEPIDLE TCP_KEEPINTVL TCP_KEEPCNT",
//	        then "end"
//
// With -plain, neither the listener nor the dialer touches keepalive (KeepAlive: -1): the
// connections keep what the kernel gives them.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

var (
	mu    sync.Mutex
	conns []*net.TCPConn
)

func keep(c net.Conn) {
	mu.Lock()
	conns = append(conns, c.(*net.TCPConn))
	mu.Unlock()
}

func port(a net.Addr) int { return a.(*net.TCPAddr).Port }

// view reads the socket's options with getsockopt on its own descriptor.
func view(c *net.TCPConn) string {
	raw, err := c.SyscallConn()
	if err != nil {
		return "error " + err.Error()
	}
	var v [4]int
	var errs []error
	raw.Control(func(fd uintptr) {
		for i, o := range [][2]int{
			{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT},
		} {
			n, err := syscall.GetsockoptInt(int(fd), o[0], o[1])
			if err != nil {
				errs = append(errs, err)
			}
			v[i] = n
		}
	})
	if len(errs) > 0 {
		return fmt.Sprint("error ", errs)
	}
	return fmt.Sprintf("%d %d %d %d %d %d", port(c.LocalAddr()), port(c.RemoteAddr()), v[0], v[1], v[2], v[3])
}

func main() {
	plain := flag.Bool("plain", false, "leave keepalive alone (KeepAlive: -1)")
	flag.Parse()
	var keepAlive time.Duration // 0: Go's default, 15 s
	if *plain {
		keepAlive = -1
	}
	var ln net.Listener
	out := bufio.NewWriter(os.Stdout)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "listen":
			lc := net.ListenConfig{KeepAlive: keepAlive}
			l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
			if err != nil {
				fmt.Fprintln(os.Stderr, "listen:", err)
				os.Exit(1)
			}
			ln = l
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					keep(c)
				}
			}()
			fmt.Fprintln(out, port(l.Addr()))
		case "dial":
			d := net.Dialer{KeepAlive: keepAlive}
			c, err := d.Dial("tcp", ln.Addr().String())
			if err != nil {
				fmt.Fprintln(os.Stderr, "dial:", err)
				os.Exit(1)
			}
			keep(c)
			fmt.Fprintln(out, port(c.LocalAddr()))
		case "show":
			mu.Lock()
			for _, c := range conns {
				fmt.Fprintln(out, view(c))
			}
			mu.Unlock()
			fmt.Fprintln(out, "end")
		default:
			fmt.Fprintln(os.Stderr, "unknown command:", in.Text())
			os.Exit(2)
		}
		out.Flush()
	}
}
