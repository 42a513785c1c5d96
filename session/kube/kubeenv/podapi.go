package kubeenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// PodAPIServer is the API server's URL as the test cluster's pods reach
// it, for kube.pod.credentials_api_server. integration/cluster/up's API
// server listens on loopback, and its pods have only the bridge (no
// kube-proxy, no route out), so this serves TLS on the bridge's gateway
// address with a certificate from the cluster's own CA (the one pods get
// in kube-root-ca.crt) and pipes each connection, still encrypted, to the
// API server: the pod's token reaches the API server unchanged, and the
// API server alone decides. On a cluster that up did not make (no CA key
// next to the admin's CA file), pods reach the API server as usual:
// https://kubernetes.default.svc.
func PodAPIServer(t testing.TB, admin *rest.Config) string {
	t.Helper()
	pki := filepath.Dir(admin.TLSClientConfig.CAFile)
	caKeyPEM, err := os.ReadFile(filepath.Join(pki, "ca.key"))
	if admin.TLSClientConfig.CAFile == "" || err != nil {
		return "https://kubernetes.default.svc"
	}
	caCertPEM, err := os.ReadFile(admin.TLSClientConfig.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	gw := bridgeGateway(t, filepath.Dir(pki))
	cert := serving(t, caCertPEM, caKeyPEM, gw)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caCertPEM)
	u, err := url.Parse(admin.Host)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", net.JoinHostPort(gw.String(), "0"), &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("listen on the pods' gateway %s: %v", gw, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if on && conns == nil {
			return false
		}
		if on {
			conns[c] = true
		} else {
			delete(conns, c)
		}
		return true
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			down, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer down.Close()
				up, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: roots, ServerName: u.Hostname(), MinVersion: tls.VersionTLS12})
				if err != nil {
					return
				}
				defer up.Close()
				if !track(down, true) || !track(up, true) {
					return
				}
				defer track(down, false)
				defer track(up, false)
				done := make(chan struct{}, 2)
				pipe := func(dst, src net.Conn) {
					_, _ = io.Copy(dst, src)
					done <- struct{}{}
				}
				go pipe(up, down)
				go pipe(down, up)
				<-done // either side ending ends both
				down.Close()
				up.Close()
				<-done
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	return "https://" + l.Addr().String()
}

// bridgeGateway is the first address of the pod subnet in the cluster's
// CNI config (the bridge plugin's gateway, on this machine).
func bridgeGateway(t testing.TB, clusterDir string) netip.Addr {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(clusterDir, "cni", "net.d", "*.conflist"))
	if len(files) != 1 {
		t.Fatalf("want one CNI config in %s/cni/net.d, found %v", clusterDir, files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Plugins []struct {
			IPAM struct {
				Ranges [][]struct {
					Subnet string `json:"subnet"`
				} `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		t.Fatalf("%s: %v", files[0], err)
	}
	for _, p := range conf.Plugins {
		for _, r := range p.IPAM.Ranges {
			for _, s := range r {
				if prefix, err := netip.ParsePrefix(s.Subnet); err == nil {
					return prefix.Masked().Addr().Next()
				}
			}
		}
	}
	t.Fatalf("%s: no pod subnet", files[0])
	return netip.Addr{}
}

// serving is a serving certificate for ip signed by the CA.
func serving(t testing.TB, caCertPEM, caKeyPEM []byte, ip netip.Addr) tls.Certificate {
	t.Helper()
	cb, _ := pem.Decode(caCertPEM)
	kb, _ := pem.Decode(caKeyPEM)
	if cb == nil || kb == nil {
		t.Fatal("the cluster's CA certificate or key is not PEM")
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var caKey any
	if caKey, err = x509.ParseECPrivateKey(kb.Bytes); err != nil {
		if caKey, err = x509.ParsePKCS8PrivateKey(kb.Bytes); err != nil {
			t.Fatalf("the cluster's CA key: %v", err)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "bastion test: the API server as pods reach it"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{ip.AsSlice()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
