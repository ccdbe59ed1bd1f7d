// A Go server for tests/run_seccomp.rs: listens on 127.0.0.1 (an ephemeral port), prints the
// port, and for each connection it accepts (Go turns keepalive on for it, 15 s) says so and
// holds it.
package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	var held []net.Conn
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Println("accept:", err)
			os.Exit(1)
		}
		held = append(held, c)
		fmt.Println("accepted", c.RemoteAddr())
	}
}
