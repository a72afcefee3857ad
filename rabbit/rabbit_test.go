package rabbit

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmq/segmq/internal/localbroker"
)

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"amqp://guest:secret@host:5672/vh": "amqp://guest:xxxxx@host:5672/vh",
		"amqps://host/":                    "amqps://host/",
		"amqp://user@host/":                "amqp://user@host/",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTopologyValidate(t *testing.T) {
	if err := (Topology{Type: "lazy"}).Validate(); err == nil || !strings.Contains(err.Error(), "classic, quorum or stream") {
		t.Fatalf("err = %v", err)
	}
	if err := (Topology{Queue: "amq.x"}).Validate(); err == nil {
		t.Fatal("amq. prefix accepted")
	}
	if (Topology{}).Name() != "snapshots" || (Topology{Queue: "q"}).DeadQueue() != "q.dead" || (Topology{Queue: "q"}).DoneQueue() != "q.done" {
		t.Fatal("names")
	}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// newCA writes a CA and, signed by it, a server certificate for
// localhost/127.0.0.1 and a client certificate, into dir.
func newCA(t *testing.T, dir, name string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	writePEM(t, filepath.Join(dir, name+"-ca.pem"), "CERTIFICATE", caDER)
	for i, leaf := range []struct {
		file string
		eku  x509.ExtKeyUsage
	}{{name + "-server", x509.ExtKeyUsageServerAuth}, {name + "-client", x509.ExtKeyUsageClientAuth}} {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: "localhost"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{leaf.eku}}
		der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(dir, leaf.file+".pem"), "CERTIFICATE", der)
		kder, _ := x509.MarshalPKCS8PrivateKey(key)
		writePEM(t, filepath.Join(dir, leaf.file+".key"), "PRIVATE KEY", kder)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestTLS runs a broker with a TLS listener that requires client
// certificates from a locally generated CA, and dials it over amqps://.
func TestTLS(t *testing.T) {
	if !localbroker.Installed(localbroker.RootFromEnv()) {
		t.Fatal(localbroker.ErrNotInstalled)
	}
	// The node reads the PEM files; from a root (RabbitMQ 4) they must lie
	// inside it, and the config names them as the node sees them.
	root := localbroker.RootFromEnv()
	dir := t.TempDir()
	if root != "" {
		var err error
		if dir, err = os.MkdirTemp(filepath.Join(root, "tmp"), "segmq-tls-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	inside := func(p string) string { return strings.TrimPrefix(p, strings.TrimSuffix(root, "/")) }
	os.Chmod(dir, 0o755)
	newCA(t, dir, "good")
	newCA(t, dir, "other")
	port := freePort(t)
	conf := fmt.Sprintf(`listeners.ssl.default = %d
ssl_options.cacertfile = %s
ssl_options.certfile = %s
ssl_options.keyfile = %s
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true`, port, inside(filepath.Join(dir, "good-ca.pem")), inside(filepath.Join(dir, "good-server.pem")), inside(filepath.Join(dir, "good-server.key")))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := localbroker.Start(ctx, localbroker.Options{Config: conf, Root: localbroker.RootFromEnv()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	url := fmt.Sprintf("amqps://guest:guest@localhost:%d/", port)
	// Wait for the TLS listener (the node is ready on its plain port first).
	var conn interface{ Close() error }
	files := TLSFiles{CA: filepath.Join(dir, "good-ca.pem"), Cert: filepath.Join(dir, "good-client.pem"), Key: filepath.Join(dir, "good-client.key")}
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := Dial(ctx, DialConfig{URL: url, TLS: files})
		if err == nil {
			conn = c
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial over TLS: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	conn.Close()

	for name, tc := range map[string]struct {
		files TLSFiles
		want  string
	}{
		"no client cert": {TLSFiles{CA: files.CA}, "connect to amqps://guest:xxxxx@"},
		"untrusted CA":   {TLSFiles{CA: filepath.Join(dir, "other-ca.pem"), Cert: files.Cert, Key: files.Key}, "certificate"},
		"cert w/o key":   {TLSFiles{CA: files.CA, Cert: files.Cert}, "both --tls-cert and --tls-key"},
	} {
		c, err := Dial(ctx, DialConfig{URL: url, TLS: tc.files, Timeout: 5 * time.Second})
		if err == nil {
			c.Close()
			t.Errorf("%s: dial succeeded", name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), ":guest@") {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, tc.want)
		}
	}
	if _, err := Dial(ctx, DialConfig{URL: strings.Replace(url, "amqps", "amqp", 1), TLS: files}); err == nil || !strings.Contains(err.Error(), "not amqps://") {
		t.Errorf("TLS files with amqp://: err = %v", err)
	}
}

// TestURLsSplitOnlyAtANewURL: a list is cut only at a comma that starts a
// new SCHEME:// URL, so a ',' in a password stays in its URL.
func TestURLsSplitOnlyAtANewURL(t *testing.T) {
	for in, want := range map[string][]string{
		"amqp://u:a,b@h/":                      {"amqp://u:a,b@h/"},
		"amqp://u:a,b@h/, amqps://v:c,,d@i/":   {"amqp://u:a,b@h/", "amqps://v:c,,d@i/"},
		"amqp://a/,,amqp://b/,":                {"amqp://a/", "amqp://b/"},
		"amqp://u:p@a/,http://u:secret@b/":     {"amqp://u:p@a/", "http://u:secret@b/"},
		"amqp://u:x,amqp@a/":                   {"amqp://u:x,amqp@a/"},
		" amqp://u:p,1@a:5672/vh , AMQP://b/ ": {"amqp://u:p,1@a:5672/vh", "AMQP://b/"},
	} {
		if got := URLs(in); !slices.Equal(got, want) {
			t.Errorf("URLs(%q) = %q, want %q", in, got, want)
		}
	}
	if err := CheckURLs("amqp://u:12,34/pw@h:5672/"); err == nil || strings.Contains(err.Error(), "34") || strings.Contains(err.Error(), "pw") {
		t.Errorf("CheckURLs of an unencoded '/' in a password: %v", err)
	}
}
