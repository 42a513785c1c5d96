package sshd

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/internal/clip"
	"github.com/bastion-ssh/bastion/ops"
	"github.com/bastion-ssh/bastion/session"
)

// Remote forwarding (ssh -R, tcpip-forward) and agent forwarding (ssh -A,
// auth-agent-req@openssh.com): the backend listens on the account's
// behalf (session.Listener) and each connection it accepts is relayed to
// the client as a channel (forwarded-tcpip, auth-agent@openssh.com).

// maxRemoteForwards bounds the ssh -R listeners one connection holds at
// a time (OpenSSH has no bound; a few are all a person uses).
const maxRemoteForwards = 16

// maxQueuedGlobal bounds the global requests waiting, in order, for the
// connection's forwarding worker; past it the connection's loop waits.
const maxQueuedGlobal = 8

// remoteForward is one ssh -R listener.
type remoteForward struct {
	l    net.Listener
	host string // the bind address as the client asked (sent back in forwarded-tcpip)
	port uint32 // the port listened on (the allocated one for port 0)
}

func forwardKey(host string, port uint32) string {
	return net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10))
}

// listener returns the backend's session.Listener, if it has one.
func (c *conn) listener() (session.Listener, bool) {
	l, ok := c.srv.backend.(session.Listener)
	return l, ok
}

// queueGlobal hands req to the forwarding worker, starting it with the
// first forwarding request. From then on every global request goes
// through it, so that replies keep the order of the requests (global
// replies carry no id). It runs on the connection's loop.
func (c *conn) queueGlobal(req *ssh.Request) bool {
	if c.globalQ == nil {
		if req.Type != "tcpip-forward" && req.Type != "cancel-tcpip-forward" {
			return false
		}
		q := make(chan *ssh.Request, maxQueuedGlobal)
		if !c.goTracked(func() { c.serveGlobal(q) }) {
			_ = req.Reply(false, nil)
			return true
		}
		c.globalQ = q
	}
	select {
	case c.globalQ <- req:
	case <-c.ctx.Done():
	}
	return true
}

// serveGlobal answers queued global requests in order until the
// connection ends.
func (c *conn) serveGlobal(q <-chan *ssh.Request) {
	for {
		select {
		case <-c.ctx.Done():
			return
		case req := <-q:
			switch req.Type {
			case "tcpip-forward":
				ok, payload := c.tcpipForward(req.Payload)
				_ = req.Reply(ok, payload)
			case "cancel-tcpip-forward":
				_ = req.Reply(c.cancelTCPIPForward(req.Payload), nil)
			default:
				c.answerGlobal(req)
			}
		}
	}
}

type tcpipForwardMsg struct {
	Host string
	Port uint32
}

// bindAddress is where ssh -R listens for a requested bind address: the
// account's loopback, whatever was asked (OpenSSH's GatewayPorts no);
// IPv6 only when an IPv6 address was asked for.
func bindAddress(host string, port uint32) string {
	lo := "127.0.0.1"
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() && !ip.Is4In6() {
		lo = "::1"
	}
	return net.JoinHostPort(lo, strconv.FormatUint(uint64(port), 10))
}

// tcpipForward serves one ssh -R request: the checks, then a listener
// from the backend whose connections are relayed to the client.
func (c *conn) tcpipForward(payload []byte) (bool, []byte) {
	var m tcpipForwardMsg
	if err := ssh.Unmarshal(payload, &m); err != nil || m.Port > 65535 || len(m.Host) > maxHostLen {
		c.log.Info("remote forward refused", "reason", "malformed request")
		return false, nil
	}
	asked := forwardKey(m.Host, m.Port)
	log := c.log.With("kind", "remote_forward", "listen", clip.String(asked, clip.Name), "account", c.account.Name)
	deny := func(reason string) (bool, []byte) {
		log.Warn("remote forward denied", "reason", reason)
		ops.Forwards.WithLabelValues("denied").Inc()
		c.srv.audit.Emit(audit.Event{Type: audit.ForwardDeny, Conn: c.id, User: c.login.User, Account: c.account.Name,
			Kind: "remote", Destination: asked, Reason: reason})
		return false, nil
	}
	bl, ok := c.listener()
	switch {
	case !c.st.Forwarding.Remote:
		return deny("remote forwarding is disabled (forwarding.remote)")
	case !ok:
		return deny("the backend cannot listen")
	}
	if err := c.restrict.AllowsListen(m.Host, m.Port); err != nil {
		return deny(err.Error())
	}
	if m.Port != 0 && m.Port < 1024 && c.account.UID != 0 {
		// OpenSSH's rule: only root forwards privileged ports.
		return deny("privileged port")
	}
	c.fwdMu.Lock()
	n := len(c.remote)
	c.fwdMu.Unlock()
	if n >= maxRemoteForwards {
		return deny(fmt.Sprintf("too many remote forwards on this connection (limit %d)", maxRemoteForwards))
	}
	// The listener lives as long as the connection (or until cancelled);
	// the backend bounds its own setup.
	r := session.Request{User: c.user, Account: c.account}
	l, err := bl.Listen(c.ctx, r, "tcp", bindAddress(m.Host, m.Port))
	if err != nil {
		log.Warn("remote forward failed", "err", err)
		ops.Forwards.WithLabelValues("failed").Inc()
		if msg, ok := session.UserMessage(err); ok {
			// The reply to tcpip-forward carries no message: tell the
			// sessions, or the next one when none is open yet (OpenSSH
			// asks for its forwards before it opens the session).
			c.forwardNotice("remote forwarding of " + clip.String(asked, clip.Name) + ": " + msg)
		}
		return false, nil
	}
	port := m.Port
	if _, ps, err := net.SplitHostPort(l.Addr().String()); err == nil {
		if p, err := strconv.ParseUint(ps, 10, 16); err == nil {
			port = uint32(p)
		}
	}
	fwd := &remoteForward{l: l, host: m.Host, port: port}
	key := forwardKey(m.Host, port)
	c.fwdMu.Lock()
	if c.remote == nil {
		c.remote = make(map[string]*remoteForward)
	}
	_, dup := c.remote[key]
	if !dup {
		c.remote[key] = fwd
	}
	c.fwdMu.Unlock()
	if dup {
		l.Close()
		return deny("already forwarded")
	}
	if !c.goTracked(func() { c.acceptRemote(fwd) }) {
		c.dropRemote(key, fwd)
		return false, nil
	}
	log.Info("remote forward listening", "address", l.Addr().String())
	c.srv.audit.Emit(audit.Event{Type: audit.ForwardListen, Conn: c.id, User: c.login.User, Account: c.account.Name,
		Kind: "remote", Destination: key})
	if m.Port == 0 {
		return true, ssh.Marshal(struct{ Port uint32 }{port})
	}
	return true, nil
}

// dropRemote forgets and closes one listener.
func (c *conn) dropRemote(key string, fwd *remoteForward) {
	c.fwdMu.Lock()
	if c.remote[key] == fwd {
		delete(c.remote, key)
	}
	c.fwdMu.Unlock()
	fwd.l.Close()
}

// cancelTCPIPForward closes the listener the client names.
func (c *conn) cancelTCPIPForward(payload []byte) bool {
	var m tcpipForwardMsg
	if err := ssh.Unmarshal(payload, &m); err != nil {
		return false
	}
	key := forwardKey(m.Host, m.Port)
	c.fwdMu.Lock()
	fwd := c.remote[key]
	c.fwdMu.Unlock()
	if fwd == nil {
		c.log.Info("remote forward cancel: no such forward", "listen", clip.String(key, clip.Name))
		return false
	}
	c.dropRemote(key, fwd)
	c.log.Info("remote forward cancelled", "kind", "remote_forward", "listen", key, "account", c.account.Name)
	return true
}

// acceptRemote relays each connection to fwd's listener to the client,
// until the listener is closed.
func (c *conn) acceptRemote(fwd *remoteForward) {
	key := forwardKey(fwd.host, fwd.port)
	defer c.dropRemote(key, fwd)
	c.acceptLoop(fwd.l, "remote", func(nc net.Conn) {
		origHost, origPort := "127.0.0.1", uint32(0)
		if ap, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
			origHost, origPort = ap.Addr().Unmap().String(), uint32(ap.Port())
		}
		extra := ssh.Marshal(struct {
			Host     string
			Port     uint32
			OrigHost string
			OrigPort uint32
		}{fwd.host, fwd.port, origHost, origPort})
		c.relay(nc, "forwarded-tcpip", extra, "remote", key)
	})
}

// acceptLoop accepts until l is closed, handing each connection to
// handle on a goroutine owned by the connection.
func (c *conn) acceptLoop(l net.Listener, kind string, handle func(net.Conn)) {
	backoff := 5 * time.Millisecond
	for {
		nc, err := l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && c.ctx.Err() == nil {
				// A transient failure (EMFILE...): wait and retry.
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-c.ctx.Done():
					t.Stop()
					return
				}
				backoff = min(2*backoff, time.Second)
				continue
			}
			if !errors.Is(err, net.ErrClosed) && c.ctx.Err() == nil {
				c.log.Warn("accept failed", "kind", kind, "err", err)
			}
			return
		}
		backoff = 5 * time.Millisecond
		if !c.goTracked(func() { handle(nc) }) {
			nc.Close()
			return
		}
	}
}

// relay opens a channel of chType to the client for nc and copies both
// ways; the channel counts against limits.max_channels_per_conn.
func (c *conn) relay(nc net.Conn, chType string, extra []byte, kind, listen string) {
	defer nc.Close()
	c.mu.Lock()
	if c.closed || c.channels >= c.st.Limits.MaxChannelsPerConn {
		c.mu.Unlock()
		c.log.Warn("forwarded connection dropped", "kind", kind, "reason", "max_channels_per_conn")
		return
	}
	c.channels++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.channels--
		c.mu.Unlock()
	}()
	ch, reqs, err := c.sc.OpenChannel(chType, extra)
	if err != nil {
		c.log.Info("client refused forwarded connection", "kind", kind, "listen", listen, "err", err)
		ops.Forwards.WithLabelValues("failed").Inc()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ssh.DiscardRequests(reqs) // ends when ch closes
	}()
	origin := nc.RemoteAddr().String()
	if kind == "remote" {
		ops.Forwards.WithLabelValues("opened").Inc()
		c.srv.audit.Emit(audit.Event{Type: audit.ForwardOpen, Conn: c.id, User: c.login.User, Account: c.account.Name,
			Kind: kind, Destination: listen})
	}
	c.log.Debug("forwarded connection open", "kind", kind, "listen", listen, "origin", origin)
	start := time.Now()
	in, out := c.splice(ch, nc)
	<-done
	d := time.Since(start)
	c.log.Debug("forwarded connection close", "kind", kind, "listen", listen, "bytes_in", in, "bytes_out", out, "duration", d.Round(time.Millisecond))
	if kind == "remote" {
		c.srv.audit.Emit(audit.Event{Type: audit.ForwardClose, Conn: c.id, User: c.login.User, Account: c.account.Name,
			Kind: kind, Destination: listen, BytesIn: in, BytesOut: out, DurationMS: d.Milliseconds()})
	}
}

// agentForward serves auth-agent-req@openssh.com: the first request of
// the connection makes the backend listen on a private socket for the
// connection's account; every session of that account started after it
// gets SSH_AUTH_SOCK (OpenSSH's semantics). It runs off the connection's
// loop, with the requesting session's later requests held until it returns
// (connLoop.hold).
//
// tell, when not nil, shows the user why the backend could not listen.
func (c *conn) agentForward(tell func(string)) bool {
	deny := func(reason string) bool {
		c.log.Info("agent forwarding refused", "reason", reason)
		c.srv.audit.Emit(audit.Event{Type: audit.ForwardDeny, Conn: c.id, User: c.login.User, Account: c.account.Name,
			Kind: "agent", Reason: reason})
		return false
	}
	bl, ok := c.listener()
	switch {
	case !c.st.Forwarding.Agent:
		return deny("agent forwarding is disabled (forwarding.agent)")
	case !ok:
		return deny("the backend cannot listen")
	}
	if err := c.restrict.AllowsAgent(); err != nil {
		return deny(err.Error())
	}
	c.agentMu.Lock()
	defer c.agentMu.Unlock()
	if c.agentSock.Load() != nil {
		return true
	}
	l, err := bl.Listen(c.ctx, session.Request{User: c.user, Account: c.account}, "unix", "")
	if st, ok := l.(session.Starting); ok && err == nil {
		// ssh-add does not retry: the socket must answer before the
		// session that gets its path starts.
		if err = st.Ready(c.ctx); err != nil {
			l.Close()
		}
	}
	if err != nil {
		c.log.Warn("agent forwarding failed", "err", err)
		if msg, ok := session.UserMessage(err); ok && tell != nil {
			tell("agent forwarding: " + msg)
		}
		return false
	}
	path := l.Addr().String()
	if !c.goTracked(func() {
		defer l.Close()
		c.acceptLoop(l, "agent", func(nc net.Conn) {
			c.relay(nc, "auth-agent@openssh.com", nil, "agent", "")
		})
	}) {
		l.Close()
		return false
	}
	c.agentSock.Store(&path)
	c.log.Info("agent forwarding", "socket", path, "account", c.account.Name)
	c.srv.audit.Emit(audit.Event{Type: audit.ForwardListen, Conn: c.id, User: c.login.User, Account: c.account.Name,
		Kind: "agent", Destination: path})
	return true
}

// forwardNotice tells the connection's open sessions msg, or keeps it
// for the next session to start when none is open (one message at most).
func (c *conn) forwardNotice(msg string) {
	c.mu.Lock()
	open := len(c.sessions) > 0
	if !open && c.notice == "" {
		c.notice = msg
	}
	c.mu.Unlock()
	if open {
		c.notify(msg)
	}
}

// takeNotice returns and forgets the kept notice.
func (c *conn) takeNotice() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.notice
	c.notice = ""
	return n
}
