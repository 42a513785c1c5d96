// Command echo is the port-forward target of the test shell image: it accepts
// TCP connections on -addr and writes back every byte it reads. It exits 0 on
// SIGTERM or SIGINT, so a pod that runs it as its main process stops at once.
//
// It is built statically by integration/cluster/up and installed in the test
// image as /usr/local/bin/bastion-echo; it is not part of the bastion.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

func main() {
	addr := flag.String("addr", ":8080", "TCP address to listen on")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, *addr); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

// serve echoes on addr until ctx is done, then closes the listener and every
// open connection and waits for their goroutines.
func serve(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	log.Printf("echoing on %s", ln.Addr())

	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", addr, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			stopClose := context.AfterFunc(ctx, func() { conn.Close() })
			defer stopClose()
			defer conn.Close()
			if _, err := io.Copy(conn, conn); err != nil && ctx.Err() == nil {
				log.Printf("echo %s: %v", conn.RemoteAddr(), err)
			}
		}()
	}
}
