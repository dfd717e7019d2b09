// Package redact hides secrets in the connection strings and URLs the
// server prints: database URLs and key=value connection strings, the OTLP
// endpoint, webhook URLs. Every log line, error and API answer that shows
// one passes it through here first.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// Mask replaces a secret.
const Mask = "xxxxx"

// secretKeys are query parameters and connection-string keys whose values
// are secrets, compared without case, "-" and "_".
var secretKeys = map[string]bool{
	"password": true, "passwd": true, "pass": true, "pwd": true, "sslpassword": true,
	"apikey": true, "key": true, "token": true, "accesstoken": true, "authtoken": true,
	"auth": true, "authorization": true, "secret": true, "clientsecret": true,
	"signature": true, "sig": true, "credential": true, "credentials": true,
}

// IsSecretKey reports whether a parameter named name holds a secret.
func IsSecretKey(name string) bool {
	n := strings.NewReplacer("-", "", "_", "").Replace(strings.ToLower(name))
	return secretKeys[n] || strings.HasSuffix(n, "password") || strings.HasSuffix(n, "token") ||
		strings.HasSuffix(n, "secret") || strings.HasSuffix(n, "apikey")
}

// URL returns s with the password of its user info and the values of its
// secret query parameters masked. A string that is not a URL with a scheme
// is treated as a key=value connection string (see DSN).
func URL(s string) string {
	if !strings.Contains(s, "://") {
		return DSN(s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), Mask)
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k, vs := range q {
			if IsSecretKey(k) {
				for i := range vs {
					vs[i] = Mask
				}
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// dsnPair is one key=value of a libpq connection string; a value may be
// single-quoted with backslash escapes.
var dsnPair = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s]*)`)

// DSN returns a key=value connection string (host=db password=s3cret)
// with the values of its secret keys masked.
func DSN(s string) string {
	return dsnPair.ReplaceAllStringFunc(s, func(pair string) string {
		m := dsnPair.FindStringSubmatch(pair)
		if !IsSecretKey(m[1]) {
			return pair
		}
		return m[1] + "=" + Mask
	})
}

// Secrets returns the secret values in a URL or key=value connection
// string: the password, and the values of secret parameters. A log handler
// masks them wherever they appear, also inside errors from libraries.
func Secrets(s string) []string {
	var out []string
	add := func(v string) {
		if len(v) >= 3 && v != Mask {
			out = append(out, v)
		}
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return nil
		}
		if p, ok := u.User.Password(); ok {
			add(p)
			add(url.QueryEscape(p))
		}
		for k, vs := range u.Query() {
			if IsSecretKey(k) {
				for _, v := range vs {
					add(v)
					add(url.QueryEscape(v))
				}
			}
		}
		return out
	}
	for _, m := range dsnPair.FindAllStringSubmatch(s, -1) {
		if IsSecretKey(m[1]) {
			v := m[2]
			if strings.HasPrefix(v, "'") {
				v = strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(strings.Trim(v, "'"))
			}
			add(v)
		}
	}
	return out
}
