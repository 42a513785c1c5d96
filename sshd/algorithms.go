package sshd

import (
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/cpu"

	"github.com/bastion-ssh/bastion/config"
)

// aesInHardware: AES and carry-less multiply instructions, which Go's
// AES-GCM uses. Without them chacha20-poly1305 is the faster cipher.
var aesInHardware = cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ || cpu.ARM64.HasAES && cpu.ARM64.HasPMULL

// algorithms are the lists one connection offers.
type algorithms struct {
	kex, ciphers, macs []string
}

// configured returns the operator's lists (ssh.kex, ssh.ciphers,
// ssh.macs), each defaulting to the whole set.
func configured(c config.SSH) algorithms {
	or := func(l, def []string) []string {
		if len(l) > 0 {
			return l
		}
		return def
	}
	return algorithms{
		kex:     or(c.Kex, config.DefaultKex),
		ciphers: or(c.Ciphers, config.DefaultCiphers),
		macs:    or(c.MACs, config.DefaultMACs),
	}
}

// steer narrows the cipher list for a client whose KEXINIT we have read,
// so that the client, whose order decides, picks the cipher that is
// fastest here: AES-GCM where the CPU has AES instructions, else
// chacha20-poly1305. A client that lists none of the preferred family
// (Dropbear, paramiko before 3.5, PuTTY before 0.78) gets the whole list
// and its own first choice. h == nil (nothing read) changes nothing.
func (a algorithms) steer(h *clientHello) algorithms {
	if h == nil {
		return a
	}
	fast := func(c string) bool { return c == "chacha20-poly1305@openssh.com" }
	if aesInHardware {
		fast = func(c string) bool { return strings.HasPrefix(c, "aes") && strings.HasSuffix(c, "-gcm@openssh.com") }
	}
	var pick []string
	for _, c := range a.ciphers {
		// Both directions: x/crypto negotiates each on its own.
		if fast(c) && slices.Contains(h.ciphersC2S, c) && slices.Contains(h.ciphersS2C, c) {
			pick = append(pick, c)
		}
	}
	if len(pick) > 0 {
		a.ciphers = pick
	}
	return a
}

// negotiated returns what the last key exchange agreed on; Read is the
// client-to-server direction. The MAC is empty for AEAD ciphers.
func negotiated(sc *ssh.ServerConn) ssh.NegotiatedAlgorithms {
	am, ok := sc.Conn.(ssh.AlgorithmsConnMetadata)
	if !ok {
		return ssh.NegotiatedAlgorithms{}
	}
	a := am.Algorithms()
	for _, d := range []*ssh.DirectionAlgorithms{&a.Read, &a.Write} {
		if strings.HasSuffix(d.Cipher, "-gcm@openssh.com") || d.Cipher == ssh.CipherChaCha20Poly1305 {
			d.MAC = ""
		}
	}
	return a
}
