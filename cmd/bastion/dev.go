package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/bastion-ssh/bastion/auth/static"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/sshd"
)

const devListen = "127.0.0.1:2222"

// cmdDev runs bastion for the invoking user with nothing else installed:
// the local backend, a dev directory holding just this user, and host
// keys kept in a state directory so they survive restarts.
func cmdDev(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "address to listen on (default "+devListen+")")
	stateDir := fs.String("state-dir", "", "state directory for host keys and the dev directory (default ~/.local/state/bastion)")
	keysFile := fs.String("authorized-keys", "", "use this file's keys for you instead of ~/.ssh/authorized_keys and ~/.ssh/*.pub")
	cfgPath := fs.String("config", "", "config file (YAML); dev fills in what it leaves unset")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bastion dev: unexpected argument %q\n", fs.Arg(0))
		return 2
	}

	me, err := currentAccount()
	if err != nil {
		fmt.Fprintf(stderr, "bastion dev: %v\n", err)
		return 1
	}
	if *stateDir == "" {
		*stateDir = defaultStateDir(me.Home)
	}
	if err := os.MkdirAll(*stateDir, 0o700); err != nil {
		fmt.Fprintf(stderr, "bastion dev: create state directory: %v\n", err)
		return 1
	}

	// Dev's defaults, for what the config file (if any) leaves unset: dev
	// runs beside other things on a laptop, so no fixed metrics port
	// unless the config asks for one, audit events go with the log, and
	// ssh listens on a port a user may open.
	defaults := config.Default()
	defaults.Ops.Listen = ""
	defaults.Audit.Output = "stderr"
	defaults.SSH.Listen = devListen
	cfg := defaults
	if *cfgPath != "" {
		cfg, err = config.LoadWithDefaults(*cfgPath, defaults)
		if err != nil {
			fmt.Fprintf(stderr, "bastion dev: %v\n", err)
			return 1
		}
	}
	cfg.Log.Format = "text"
	// The invoking user's own mistypes on this machine do not lock them
	// out: the loopback address a dev client uses is exempt from
	// penalties unless the config names its own exemptions.
	if cfg.Limits.Penalties.Exempt == nil {
		cfg.Limits.Penalties.Exempt = []string{"127.0.0.1", "::1"}
	}
	if *listen != "" {
		cfg.SSH.Listen = *listen
	}
	if len(cfg.SSH.HostKeys) == 0 {
		paths, err := sshd.EnsureHostKeys(filepath.Join(*stateDir, "hostkeys"))
		if err != nil {
			fmt.Fprintf(stderr, "bastion dev: %v\n", err)
			return 1
		}
		cfg.SSH.HostKeys = paths
	}

	var keyFiles []string
	if *keysFile != "" {
		abs, err := filepath.Abs(*keysFile)
		if err != nil {
			fmt.Fprintf(stderr, "bastion dev: --authorized-keys: %v\n", err)
			return 1
		}
		if _, err := os.Stat(abs); err != nil {
			fmt.Fprintf(stderr, "bastion dev: --authorized-keys: %v\n", err)
			return 1
		}
		keyFiles = []string{abs}
	} else {
		keyFiles = []string{filepath.Join(me.Home, ".ssh", "authorized_keys"), filepath.Join(me.Home, ".ssh", "*.pub")}
	}
	if cfg.Directory.Type == "static" && cfg.Directory.File == "" {
		path := filepath.Join(*stateDir, "users.yaml")
		if err := writeDevDirectory(path, me, keyFiles); err != nil {
			fmt.Fprintf(stderr, "bastion dev: %v\n", err)
			return 1
		}
		cfg.Directory.File = path
	}
	if err := checkConfig(&cfg); err != nil {
		fmt.Fprintf(stderr, "bastion dev: %v\n", err)
		return 1
	}
	log := newLogger(cfg.Log, stderr)

	hasKey := false
	for _, pattern := range keyFiles {
		matches, _ := filepath.Glob(pattern)
		for _, m := range matches {
			// Unusable lines are logged by the directory at the first login.
			ignore := func(string, []byte, error) {}
			if keys, err := static.ReadAuthorizedKeys(m, ignore); err == nil && len(keys) > 0 {
				hasKey = true
			}
		}
	}
	su := &startup{stdout: stdout, lines: func(addr net.Addr) []string {
		var lines []string
		if !hasKey {
			lines = append(lines, fmt.Sprintf("You have no SSH key yet. Make one with:  ssh-keygen -t ed25519   (bastion reads %s)", strings.Join(keyFiles, " and ")))
		}
		host, port, _ := net.SplitHostPort(addr.String())
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
		}
		lines = append(lines, chooseSFTP(cfg).Line)
		return append(lines, fmt.Sprintf("bastion dev is ready. Log in with:  ssh -p %s %s@%s", port, me.Name, host))
	}}
	var load func() (config.Config, error)
	var watched []string
	if *cfgPath != "" {
		// A reload re-reads the file and fills in dev's defaults again.
		devCfg := cfg
		path := *cfgPath
		watched = []string{path}
		reloadDefaults := defaults
		reloadDefaults.SSH.Listen = devCfg.SSH.Listen // --listen, or dev's own
		load = func() (config.Config, error) {
			c, err := config.LoadWithDefaults(path, reloadDefaults)
			if err != nil {
				return c, err
			}
			if len(c.SSH.HostKeys) == 0 {
				c.SSH.HostKeys = devCfg.SSH.HostKeys
			}
			if c.Directory.Type == "static" && c.Directory.File == "" {
				c.Directory.File = devCfg.Directory.File
			}
			c.Log = devCfg.Log
			return c, checkConfig(&c)
		}
	}
	return serve(cfg, load, watched, log, su)
}

func defaultStateDir(home string) string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "bastion")
	}
	return filepath.Join(home, ".local", "state", "bastion")
}

type account struct {
	Name     string
	UID, GID int
	Home     string
	Shell    string
	GIDs     []int
}

func currentAccount() (account, error) {
	u, err := user.Current()
	if err != nil {
		return account{}, fmt.Errorf("who are you? %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	a := account{Name: u.Username, UID: uid, GID: gid, Home: u.HomeDir, Shell: loginShell(u.Username)}
	if ids, err := u.GroupIds(); err == nil {
		for _, s := range ids {
			if g, err := strconv.Atoi(s); err == nil && g != gid {
				a.GIDs = append(a.GIDs, g)
			}
		}
	}
	return a, nil
}

// loginShell reads the user's shell from /etc/passwd, else $SHELL, else /bin/sh.
func loginShell(name string) string {
	if f, err := os.Open("/etc/passwd"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Split(sc.Text(), ":")
			if len(fields) == 7 && fields[0] == name && fields[6] != "" {
				return fields[6]
			}
		}
	}
	if s := os.Getenv("SHELL"); s != "" {
		return s
	}
	return "/bin/sh"
}

func writeDevDirectory(path string, me account, keyFiles []string) error {
	f := static.File{Users: []static.User{{
		Name: me.Name, UID: me.UID, GID: me.GID, GIDs: me.GIDs, Home: me.Home, Shell: me.Shell,
		KeyFiles: keyFiles,
	}}}
	data, err := yaml.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode dev directory: %w", err)
	}
	data = append([]byte("# Written by `bastion dev` at every start; edit a copy and pass it with --config.\n"), data...)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write dev directory: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return errors.Join(fmt.Errorf("write dev directory: %w", err))
	}
	return nil
}
