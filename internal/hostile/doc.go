// Package hostile is a small hostile SSH client for bastion's tests: it
// connects from a chosen local address (loopback aliases such as
// 127.0.0.2 stand for distinct sources), holds silent or half-finished
// handshakes, sends garbage, fails authentication on purpose, floods a
// session with env requests and a connection with channels, and sends
// names of any length. It uses golang.org/x/crypto/ssh's client.
//
// It is for tests only and must not import other bastion packages.
package hostile
