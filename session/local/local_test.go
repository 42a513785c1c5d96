package local

import (
	"io"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"testing"

	"go.uber.org/goleak"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/session/sessiontest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(me.Uid)
	gid, _ := strconv.Atoi(me.Gid)
	sftp := "/usr/lib/openssh/sftp-server"
	if _, err := os.Stat(sftp); err != nil {
		t.Fatalf("sftp-server missing (apt-get install openssh-sftp-server): %v", err)
	}
	sessiontest.Run(t, func(t *testing.T) sessiontest.Harness {
		home := t.TempDir()
		b := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
		return sessiontest.Harness{
			Backend:    b,
			Close:      b.Close,
			Account:    auth.Account{Name: me.Username, UID: uid, GID: gid, Home: home, Shell: "/bin/sh"},
			SFTPServer: sftp,
			EchoAddr:   sessiontest.EchoServer(t),
		}
	})
}

// TestListenUnixOtherAccount checks that, run as root, the private socket
// belongs to the account (nobody here), which can use it.
func TestListenUnixOtherAccount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run as another uid")
	}
	b := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer b.Close()
	sessiontest.ListenUnix(t, sessiontest.Harness{
		Backend: b,
		Account: auth.Account{Name: "nobody", UID: 65534, GID: 65534, Home: "/", Shell: "/bin/sh"},
	})
}
