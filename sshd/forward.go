package sshd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/internal/clip"
	"github.com/bastion-ssh/bastion/ops"
	"github.com/bastion-ssh/bastion/session"
)

// dialTimeout bounds connecting a forwarded channel.
const dialTimeout = 10 * time.Second

// handleDirectTCPIP serves `ssh -L`: a destination the policy allows is
// dialled through the backend and bytes are copied both ways.
// maxHostLen bounds a forward's destination name (a DNS name is at most
// 253 bytes).
const maxHostLen = 255

func (c *conn) handleDirectTCPIP(nch ssh.NewChannel) {
	m, err := parseDirectTCPIP(nch.ExtraData())
	if err != nil {
		_ = nch.Reject(ssh.ConnectionFailed, "malformed forwarding request")
		return
	}
	if len(m.Host) > maxHostLen {
		// No DNS name or address is this long; refusing here keeps the
		// name out of every log line and message below.
		c.log.Info("forward refused", "reason", "destination name too long", "destination", clip.String(m.Host, clip.Name))
		ops.Forwards.WithLabelValues("denied").Inc()
		_ = nch.Reject(ssh.Prohibited, fmt.Sprintf("bastion: destination name longer than %d bytes", maxHostLen))
		return
	}
	dest := net.JoinHostPort(m.Host, strconv.Itoa(int(m.Port)))
	log := c.log.With("kind", "forward", "destination", dest, "account", c.account.Name)
	// deny is the one path for a forward refused by policy: the key's
	// restrictions and forwarding.allow (forwardpolicy.Policy), or the
	// backend's own rules (session.ErrForbidden from Dial).
	deny := func(reason, msg string) {
		log.Warn("forward denied", "reason", reason)
		ops.Forwards.WithLabelValues("denied").Inc()
		c.srv.audit.Emit(audit.Event{Type: audit.ForwardDeny, Conn: c.id, User: c.login.User, Account: c.account.Name,
			Destination: dest, Reason: reason})
		_ = nch.Reject(ssh.Prohibited, msg)
	}
	addr, err := c.st.policy.Check(c.ctx, c.restrict, m.Host, m.Port)
	if err != nil {
		deny(err.Error(), "bastion: forwarding to "+dest+" is not allowed: "+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, dialTimeout)
	// The forward acts as the login's account: the tool of alice+tool.
	req := session.Request{User: c.user, Account: c.account}
	upstream, err := c.srv.backend.Dial(ctx, req, "tcp", addr)
	cancel()
	if err != nil {
		msg := "bastion: cannot connect to " + dest
		if um, ok := session.UserMessage(err); ok {
			msg = "bastion: " + um
		}
		if errors.Is(err, session.ErrForbidden) {
			deny(err.Error(), msg)
			return
		}
		log.Warn("forward failed", "err", err)
		ops.Forwards.WithLabelValues("failed").Inc()
		_ = nch.Reject(ssh.ConnectionFailed, msg)
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		upstream.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ssh.DiscardRequests(reqs) // ends when ch closes
	}()
	log.Info("forward open")
	ops.Forwards.WithLabelValues("opened").Inc()
	active := ops.SessionsActive.WithLabelValues(c.st.BackendName, "forward")
	active.Inc()
	c.srv.audit.Emit(audit.Event{Type: audit.ForwardOpen, Conn: c.id, User: c.login.User, Account: c.account.Name, Destination: dest})
	start := time.Now()
	in, out := c.splice(ch, upstream)
	wg.Wait()
	active.Dec()
	d := time.Since(start)
	log.Info("forward close", "bytes_in", in, "bytes_out", out, "duration", d.Round(time.Millisecond))
	c.srv.audit.Emit(audit.Event{Type: audit.ForwardClose, Conn: c.id, User: c.login.User, Account: c.account.Name,
		Destination: dest, BytesIn: in, BytesOut: out, DurationMS: d.Milliseconds()})
}

// splice copies both ways with half-closes, and returns when both
// directions are done or the connection is cancelled.
func (c *conn) splice(ch ssh.Channel, upstream net.Conn) (in, out int64) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		in = c.copyCounted(upstream, ch, &c.bytesIn, bytesIn)
		if cw, ok := upstream.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			upstream.Close()
		}
	}()
	go func() {
		defer wg.Done()
		out = c.copyCounted(ch, upstream, &c.bytesOut, bytesOut)
		_ = ch.CloseWrite()
	}()
	done := make(chan struct{})
	stop := context.AfterFunc(c.ctx, func() {
		upstream.Close()
		ch.Close()
	})
	go func() { wg.Wait(); close(done) }()
	<-done
	stop()
	upstream.Close()
	ch.Close()
	return in, out
}

func (c *conn) copyCounted(dst io.Writer, src io.Reader, n interface{ Add(int64) int64 }, metric interface{ Add(float64) }) int64 {
	total, _ := session.Copy(dst, src, func(k int) {
		n.Add(int64(k))
		metric.Add(float64(k))
		c.touch()
	})
	return total
}
