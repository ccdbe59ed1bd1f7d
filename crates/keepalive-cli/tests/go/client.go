// A Go client for tests/run_seccomp.rs: dials ARGV[1] (HOST:PORT) with Go's defaults (which turn
// keepalive on with 15 s idle and interval), says so, and holds the connection.
package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	c, err := net.Dial("tcp", os.Args[1])
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(1)
	}
	fmt.Println("connected", c.LocalAddr())
	time.Sleep(60 * time.Second)
}
