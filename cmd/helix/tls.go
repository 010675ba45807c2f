package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// tlsFlags configure TLS to MySQL from files, for DSNs that cannot name a custom TLS
// config themselves: the driver's tls=custom only works once a program has registered
// a config under that name, which these flags do.
type tlsFlags struct {
	ca, cert, key string
}

// tlsConfigName is the name the flags register their config under (the DSN's tls=).
const tlsConfigName = "custom"

func (t *tlsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.ca, "tls-ca", "", "PEM `file` of the CA certificates that verify the MySQL server (default: the system's);\nany --tls-* flag turns on TLS with server verification (tls=custom in the DSN)")
	fs.StringVar(&t.cert, "tls-cert", "", "PEM `file` of a client certificate, for a server or user that requires one (with --tls-key)")
	fs.StringVar(&t.key, "tls-key", "", "PEM `file` of the client certificate's private key (with --tls-cert)")
}

func (t *tlsFlags) set() bool { return t.ca != "" || t.cert != "" || t.key != "" }

// apply registers the TLS config the flags describe and returns dsn set to use it. A
// DSN that asks for another TLS mode is refused rather than silently overridden.
func (t *tlsFlags) apply(dsn string) (string, error) {
	if !t.set() {
		return dsn, nil
	}
	if (t.cert == "") != (t.key == "") {
		return "", fmt.Errorf("invalid --tls-cert/--tls-key: give both or neither")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.ca != "" {
		pem, err := os.ReadFile(t.ca)
		if err != nil {
			return "", fmt.Errorf("invalid --tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return "", fmt.Errorf("invalid --tls-ca %s: no PEM certificate in it", t.ca)
		}
		cfg.RootCAs = pool
	}
	if t.cert != "" {
		pair, err := tls.LoadX509KeyPair(t.cert, t.key)
		if err != nil {
			return "", fmt.Errorf("invalid --tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	// The driver fills in ServerName from the DSN's address when it resolves the name.
	if err := mysql.RegisterTLSConfig(tlsConfigName, cfg); err != nil {
		return "", err
	}
	base, query, _ := strings.Cut(dsn, "?")
	params, err := url.ParseQuery(query)
	if err != nil {
		return "", fmt.Errorf("--tls-* flags: cannot read the DSN's parameters: %v", err)
	}
	switch mode := params.Get("tls"); mode {
	case "":
		if query != "" {
			return dsn + "&tls=" + tlsConfigName, nil
		}
		return base + "?tls=" + tlsConfigName, nil
	case tlsConfigName:
		return dsn, nil
	default:
		return "", fmt.Errorf("the DSN sets tls=%s but --tls-ca/--tls-cert/--tls-key configure tls=%s: drop one of them", mode, tlsConfigName)
	}
}
