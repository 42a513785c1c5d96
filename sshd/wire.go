package sshd

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/bastion-ssh/bastion/session"
)

// Parsers for the RFC 4254 request payloads x/crypto leaves to us. They
// never panic on hostile input (see FuzzParsePtyRequest).

var errShortPayload = errors.New("payload too short")

type exitStatusMsg struct{ Status uint32 }

type exitSignalMsg struct {
	Signal     string
	CoreDumped bool
	Errmsg     string
	Lang       string
}

// wireSignal is the name sent in exit-signal for a process killed by
// sig, as OpenSSH's sshd sends it: the RFC 4254 names as they are, any
// other signal as "SIG@openssh.com" (OpenSSH's sig2name), which clients
// show as a signal without naming it.
func wireSignal(sig session.Signal) string {
	switch sig {
	case "ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT", "SEGV", "TERM", "USR1", "USR2":
		return string(sig)
	}
	return "SIG@openssh.com"
}

type directTCPIPMsg struct {
	Host       string
	Port       uint32
	OriginHost string
	OriginPort uint32
}

func parseString(p []byte) (string, error) {
	s, _, ok := readString(p)
	if !ok {
		return "", errShortPayload
	}
	return s, nil
}

func readString(p []byte) (string, []byte, bool) {
	if len(p) < 4 {
		return "", nil, false
	}
	n := binary.BigEndian.Uint32(p)
	if uint64(n) > uint64(len(p)-4) {
		return "", nil, false
	}
	return string(p[4 : 4+n]), p[4+n:], true
}

func readUint32(p []byte) (uint32, []byte, bool) {
	if len(p) < 4 {
		return 0, nil, false
	}
	return binary.BigEndian.Uint32(p), p[4:], true
}

// maxTermLen bounds the TERM value a client may set.
const maxTermLen = 256

func parsePtyRequest(p []byte) (session.TTY, error) {
	var t session.TTY
	term, p, ok := readString(p)
	if !ok {
		return t, errShortPayload
	}
	if len(term) > maxTermLen {
		return t, fmt.Errorf("TERM longer than %d bytes", maxTermLen)
	}
	for i := 0; i < len(term); i++ {
		if term[i] < 0x21 || term[i] > 0x7e {
			return t, fmt.Errorf("TERM has a non-printable byte")
		}
	}
	var cols, rows uint32
	if cols, p, ok = readUint32(p); !ok {
		return t, errShortPayload
	}
	if rows, p, ok = readUint32(p); !ok {
		return t, errShortPayload
	}
	if _, p, ok = readUint32(p); !ok { // width px
		return t, errShortPayload
	}
	if _, p, ok = readUint32(p); !ok { // height px
		return t, errShortPayload
	}
	modes, _, ok := readString(p)
	if !ok {
		modes = ""
	}
	t.Term = term
	if term == "" {
		t.Term = "dumb"
	}
	t.Size = session.WindowSize{Cols: clamp16(cols), Rows: clamp16(rows)}
	t.Modes = parseModes([]byte(modes))
	return t, nil
}

// parseModes decodes RFC 4254 section 8 encoded terminal modes. Opcodes
// 1-159 carry a uint32; 0 (TTY_OP_END) ends the list; 160+ is undefined
// and stops parsing.
func parseModes(b []byte) map[uint8]uint32 {
	m := make(map[uint8]uint32)
	for len(b) >= 5 {
		op := b[0]
		if op == 0 || op >= 160 {
			break
		}
		m[op] = binary.BigEndian.Uint32(b[1:5])
		b = b[5:]
	}
	return m
}

func clamp16(v uint32) uint16 {
	if v > 0xffff {
		return 0xffff
	}
	return uint16(v)
}

func parseWindowChange(p []byte) (session.WindowSize, error) {
	cols, p, ok := readUint32(p)
	if !ok {
		return session.WindowSize{}, errShortPayload
	}
	rows, _, ok := readUint32(p)
	if !ok {
		return session.WindowSize{}, errShortPayload
	}
	return session.WindowSize{Cols: clamp16(cols), Rows: clamp16(rows)}, nil
}

func parseEnvRequest(p []byte) (name, value string, err error) {
	name, p, ok := readString(p)
	if !ok {
		return "", "", errShortPayload
	}
	value, _, ok = readString(p)
	if !ok {
		return "", "", errShortPayload
	}
	return name, value, nil
}

func parseSignal(p []byte) (string, error) { return parseString(p) }

func parseDirectTCPIP(p []byte) (directTCPIPMsg, error) {
	var m directTCPIPMsg
	if err := ssh.Unmarshal(p, &m); err != nil {
		return m, fmt.Errorf("direct-tcpip payload: %w", err)
	}
	return m, nil
}
