package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTLSFlagsHandshakeWithMariaDB starts a private, throwaway mariadbd with TLS (a
// certificate generated here) on a free port — never the shared server on :3306 — and
// a user that REQUIRES X509, so that only a verified TLS handshake with the client
// certificate gets in. helix migrate and helix status connect with --tls-ca,
// --tls-cert, --tls-key (and their HELIX_TLS_* variables); without them, or with
// tls=true (system roots, no client certificate), they are refused.
func TestTLSFlagsHandshakeWithMariaDB(t *testing.T) {
	srv := startTLSMariaDB(t)
	user := "helix:pw@tcp(" + srv.addr + ")/helix"

	flags := []string{"--tls-ca", srv.ca, "--tls-cert", srv.clientCert, "--tls-key", srv.clientKey}
	code, out, errOut := quick(t, map[string]string{"HELIX_DSN": user}, append([]string{"migrate"}, flags...)...)
	if code != 0 || !strings.Contains(out, "migrated") {
		t.Fatalf("migrate over TLS: exit %d, out %q, err %q", code, out, errOut)
	}
	tlsEnv := map[string]string{"HELIX_DSN": user, "HELIX_TLS_CA": srv.ca, "HELIX_TLS_CERT": srv.clientCert, "HELIX_TLS_KEY": srv.clientKey}
	if code, out, errOut := quick(t, tlsEnv, "status"); code != 0 || !strings.Contains(out, "coordinator:") {
		t.Fatalf("status with HELIX_TLS_*: exit %d, out %q, err %q", code, out, errOut)
	}
	// The session really is encrypted: the config the flags registered, used directly.
	db, err := sql.Open("mysql", user+"?tls="+tlsConfigName)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var name, cipher string
	if err := db.QueryRow("SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&name, &cipher); err != nil || cipher == "" {
		t.Fatalf("Ssl_cipher = %q, %v; want a cipher", cipher, err)
	}
	t.Logf("TLS session cipher %s", cipher)

	for _, c := range []struct {
		name string
		vars map[string]string
		args []string
		want string
	}{
		{"no TLS", map[string]string{"HELIX_DSN": user}, nil, "Access denied"},
		{"tls=true without the CA", map[string]string{"HELIX_DSN": user + "?tls=true"}, nil, "certificate"},
		{"CA only, no client certificate", map[string]string{"HELIX_DSN": user}, []string{"--tls-ca", srv.ca}, "Access denied"},
		{"the DSN asks for another mode", map[string]string{"HELIX_DSN": user + "?tls=skip-verify"}, flags, "tls=skip-verify"},
		{"a key without a certificate", map[string]string{"HELIX_DSN": user}, []string{"--tls-key", srv.clientKey}, "--tls-cert/--tls-key"},
		{"a CA file without certificates", map[string]string{"HELIX_DSN": user}, []string{"--tls-ca", srv.clientKey}, "no PEM certificate"},
	} {
		code, _, errOut := quick(t, c.vars, append([]string{"status"}, c.args...)...)
		if code != 1 || !strings.Contains(errOut, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want 1 and %q", c.name, code, errOut, c.want)
		}
	}
}

type tlsServer struct {
	addr                      string
	ca, clientCert, clientKey string
}

// startTLSMariaDB installs and starts a mariadbd of its own in a temporary directory.
func startTLSMariaDB(t *testing.T) tlsServer {
	t.Helper()
	mariadbd, err1 := exec.LookPath("mariadbd")
	if err1 != nil {
		mariadbd, err1 = exec.LookPath("/usr/sbin/mariadbd")
	}
	install, err2 := exec.LookPath("mariadb-install-db")
	if err1 != nil || err2 != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but mariadbd / mariadb-install-db are not installed: %v %v", err1, err2)
		}
		t.Skipf("NO MARIADB SERVER BINARY FOR THIS TEST: mariadbd or mariadb-install-db not found (%v; %v); install mariadb-server to run it", err1, err2)
	}
	dir := t.TempDir()
	srv := tlsServer{ca: filepath.Join(dir, "ca.pem"), clientCert: filepath.Join(dir, "client.pem"), clientKey: filepath.Join(dir, "client-key.pem")}
	serverCert, serverKey := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	writeCerts(t, srv.ca, serverCert, serverKey, srv.clientCert, srv.clientKey)

	data, sock := filepath.Join(dir, "data"), filepath.Join(dir, "mysqld.sock")
	common := []string{"--no-defaults", "--datadir=" + data, "--innodb-buffer-pool-size=16M", "--innodb-log-file-size=4M"}
	if os.Geteuid() == 0 {
		common = append(common, "--user=root")
	}
	args := append([]string{"--no-defaults", "--datadir=" + data, "--auth-root-authentication-method=normal", "--skip-test-db"}, common[2:]...)
	if out, err := exec.Command(install, args...).CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	srv.addr = fmt.Sprintf("127.0.0.1:%d", port)
	logf, err := os.Create(filepath.Join(dir, "mariadbd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mariadbd, append(common, "--socket="+sock, fmt.Sprintf("--port=%d", port), "--bind-address=127.0.0.1",
		"--skip-name-resolve", "--skip-log-bin", "--pid-file="+filepath.Join(dir, "mariadbd.pid"),
		"--ssl-ca="+srv.ca, "--ssl-cert="+serverCert, "--ssl-key="+serverKey)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	root, err := sql.Open("mysql", "root@unix("+sock+")/")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	deadline := time.Now().Add(60 * time.Second)
	for root.Ping() != nil {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "mariadbd.log"))
			t.Fatalf("mariadbd exited: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("mariadbd did not accept connections within 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, q := range []string{
		"CREATE DATABASE helix",
		"CREATE USER 'helix'@'%' IDENTIFIED BY 'pw' REQUIRE X509",
		"GRANT ALL ON helix.* TO 'helix'@'%'",
	} {
		if _, err := root.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return srv
}

// writeCerts writes a CA, a server certificate for 127.0.0.1 / localhost and a client
// certificate, all signed by the CA, as PEM files.
func writeCerts(t *testing.T, caPath, serverPath, serverKeyPath, clientPath, clientKeyPath string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(path, typ string, der []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKey := func(path string, k *ecdsa.PrivateKey) {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		write(path, "PRIVATE KEY", der)
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "helix test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write(caPath, "CERTIFICATE", caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, path, keyPath string) {
		k := newKey()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
			tmpl.DNSNames = []string{"localhost"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		write(path, "CERTIFICATE", der)
		writeKey(keyPath, k)
	}
	leaf(2, "127.0.0.1", x509.ExtKeyUsageServerAuth, serverPath, serverKeyPath)
	leaf(3, "helix", x509.ExtKeyUsageClientAuth, clientPath, clientKeyPath)
}
