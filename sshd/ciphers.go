package sshd

import (
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/cpu"
)

// aesGCMInHardware: AES and carry-less multiply instructions, which Go's
// AES-GCM uses.
var aesGCMInHardware = cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ || cpu.ARM64.HasAES && cpu.ARM64.HasPMULL

// serverCiphers are the ciphers offered. The client's order decides, and
// OpenSSH clients list chacha20-poly1305 first, so offering it means
// using it; x/crypto's chacha20 has no assembly on amd64 and runs at about
// a third of AES-GCM's speed (go test ./bench -bench Channel). Where AES-GCM
// runs in hardware it is therefore the only family offered; clients that
// know chacha20 but not AES-GCM (PuTTY before 0.76, Dropbear before
// 2022.82) cannot connect then.
// configured, when not empty, is the operator's choice (ssh.ciphers).
func serverCiphers(configured []string) []string {
	if len(configured) > 0 {
		return configured
	}
	if aesGCMInHardware {
		return []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM}
	}
	return []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM, ssh.CipherChaCha20Poly1305}
}
