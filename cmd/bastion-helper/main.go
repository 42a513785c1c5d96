// Command bastion-helper runs inside shell pods (copied there from
// bastion's image by an init container); see internal/podhelper. Build it
// static: CGO_ENABLED=0 go build ./cmd/bastion-helper.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bastion-ssh/bastion/internal/become"
	"github.com/bastion-ssh/bastion/internal/podhelper"
	"github.com/bastion-ssh/bastion/internal/sftpserver"
)

const usage = `usage: bastion-helper <command> [args]

commands (run by bastion through the exec API, not by people):
  run TOKEN SHELL COMMAND PIDS [NAME=VALUE...]   start a session's process and exit with its status
  hangup TOKEN                                   end a dropped session as a terminal hang-up does
  signal TOKEN SIG                               send SIG (TERM, INT...) to the session's process
  status TOKEN                                   print how the session's process ended: "SIG CORE", "exit 0" or "none"
  sftp-server [-R] [-d DIR] [-u UMASK]           SFTP on stdin/stdout as the invoking user
  relay tcp HOST:PORT | relay unix [PATH]        listen on bastion's behalf (ssh -R, agent forwarding)
  install DIR                                    copy this binary to DIR/bastion-helper (the pod's init container)

command for people (the shell pod mounts this binary at /usr/local/bin/become):
  become TOOL [COMMAND...]                       act as a tool you maintain, through bastion (also as argv[0] "become")
`

// hangupGrace is how long hung-up processes have before SIGKILL.
const hangupGrace = 2 * time.Second

func main() {
	if filepath.Base(os.Args[0]) == "become" {
		// /usr/local/bin/become in a shell pod (a mount of this binary).
		os.Exit(become.Main(os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	need := func(n int) bool {
		if len(args)-1 != n {
			fmt.Fprintf(stderr, "bastion-helper %s: want %d arguments\n%s", args[0], n, usage)
			return false
		}
		return true
	}
	switch args[0] {
	case "run":
		return podhelper.Run(args[1:], stderr)
	case "hangup":
		if !need(1) {
			return 2
		}
		ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer cancel()
		if err := podhelper.Hangup(ctx, "/proc", args[1], hangupGrace); err != nil {
			fmt.Fprintf(stderr, "bastion-helper hangup: %v\n", err)
			return 1
		}
		return 0
	case "signal":
		if !need(2) {
			return 2
		}
		if err := podhelper.Signal("/proc", args[1], args[2]); err != nil {
			fmt.Fprintf(stderr, "bastion-helper signal: %v\n", err)
			return 1
		}
		return 0
	case "status":
		if !need(1) {
			return 2
		}
		s, err := podhelper.Status(args[1])
		if err != nil {
			fmt.Fprintf(stderr, "bastion-helper status: %v\n", err)
			return 1
		}
		if s != "" {
			fmt.Fprintln(stdout, s)
		}
		return 0
	case "become":
		return become.Main(args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	case "sftp-server":
		ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer cancel()
		return sftpserver.Main(ctx, args[1:], os.Stdin, os.Stdout, stderr)
	case "relay":
		ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
		defer cancel()
		if err := podhelper.Relay(ctx, args[1:], os.Stdin, stdout); err != nil {
			fmt.Fprintf(stderr, "bastion-helper relay: %v\n", err)
			return 1
		}
		return 0
	case "install":
		if !need(1) {
			return 2
		}
		if err := podhelper.Install(args[1]); err != nil {
			fmt.Fprintf(stderr, "bastion-helper: %v\n", err)
			return 1
		}
		return 0
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "bastion-helper: unknown command %q\n%s", args[0], usage)
		return 2
	}
}
