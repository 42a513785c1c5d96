package ldap

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// caFile holds the roots that verify the servers, re-read from path at
// every new connection (connections are few: they are pooled) so that a
// rotated CA is picked up without a restart. A file that cannot be read
// or parsed keeps the last good roots, with a warning.
type caFile struct {
	path string
	log  *slog.Logger

	mu    sync.Mutex
	data  []byte
	roots *x509.CertPool
}

// tlsConfig returns the client TLS configuration for host.
func (c *caFile) tlsConfig(host string) (*tls.Config, error) {
	roots, err := c.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{ServerName: host, RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
}

// load returns the current roots (nil: the system's).
func (c *caFile) load() (*x509.CertPool, error) {
	if c.path == "" {
		return nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	data, err := os.ReadFile(c.path)
	if err != nil {
		if c.roots != nil {
			c.log.Warn("ldap CA file unreadable; keeping the CA loaded before", "ca_file", c.path, "err", err)
			return c.roots, nil
		}
		return nil, fmt.Errorf("read ldap CA file: %w", err)
	}
	if c.roots != nil && bytes.Equal(data, c.data) {
		return c.roots, nil
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(data) {
		if c.roots != nil {
			c.log.Warn("ldap CA file has no PEM certificate; keeping the CA loaded before", "ca_file", c.path)
			return c.roots, nil
		}
		return nil, fmt.Errorf("ldap CA file %s: no PEM certificate in it", c.path)
	}
	if c.roots != nil {
		c.log.Info("ldap CA file changed; new connections verify with the new CA", "ca_file", c.path)
	}
	c.data, c.roots = data, roots
	return roots, nil
}

// readPassword reads the bind password: the file's first line.
func readPassword(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read bind password file: %w", err)
	}
	pw, _, _ := strings.Cut(string(data), "\n")
	pw = strings.TrimSuffix(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("bind password file %s is empty", path)
	}
	return pw, nil
}
