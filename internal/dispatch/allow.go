package dispatch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"

	"github.com/accord-saga/accord/internal/redact"
)

// ErrTargetNotAllowed is returned (wrapped) when a push target does not
// match the operator's allowlist, before the call or at connect time.
var ErrTargetNotAllowed = errors.New("dispatch: target not allowed")

// ErrInvalidTarget is returned (wrapped) for a push target that is not an
// absolute http:// or https:// URL.
var ErrInvalidTarget = errors.New("dispatch: invalid target")

// Allowlist decides which HTTP endpoints push dispatch may call. It is built
// from operator entries of three kinds:
//
//   - "*" allows every target, with no address check at all.
//   - A URL pattern "scheme://host[:port]": scheme is http or https; host is
//     an exact name ("orders.internal"), a wildcard "*.example.com" (one or
//     more labels before the suffix), an IP literal ("127.0.0.1",
//     "[::1]") or "*" (any host); port is a number or "*" and defaults to the
//     scheme's port. Paths, queries and credentials are not allowed in a
//     pattern: only the endpoint is matched.
//   - An address range: a CIDR ("10.0.0.0/8", "fd00::/8") or a single IP
//     ("10.1.2.3"). It allows any http or https target, on any port, whose
//     connection goes to an address in the range.
//
// A target passes when its URL matches a URL pattern, or when an address
// range could admit it (its host is an IP literal in a range, or a name and
// ranges exist). The final word is said at connect time, on the address the
// name resolved to, so that DNS rebinding cannot move a call elsewhere:
//
//   - a connection for a name matched by a URL pattern may go to any address
//     except unspecified, multicast, broadcast and link-local ones
//     (169.254.0.0/16 and fe80::/10 hold cloud metadata services), unless an
//     address range lists that address explicitly;
//   - any other connection must go to an address inside an address range.
//
// An empty Allowlist refuses every target.
//
// An Allowlist is immutable and safe for concurrent use.
type Allowlist struct {
	all      bool
	patterns []urlPattern
	nets     []netip.Prefix
	entries  []string
}

type urlPattern struct {
	raw     string
	scheme  string
	anyHost bool
	suffix  string // ".example.com" for "*.example.com"
	host    string // exact lower-case name or canonical IP text
	port    string // digits, or "*"
}

// NewAllowlist parses operator entries; see Allowlist for their forms.
func NewAllowlist(entries []string) (*Allowlist, error) {
	a := &Allowlist{}
	var errs []error
	for _, raw := range entries {
		e := strings.TrimSpace(raw)
		a.entries = append(a.entries, e)
		switch {
		case e == "":
			errs = append(errs, errors.New("dispatch: allow entry is empty"))
		case e == "*":
			a.all = true
		case strings.Contains(e, "://"):
			p, err := parsePattern(e)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			a.patterns = append(a.patterns, p)
		default:
			n, err := parseRange(e)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			a.nets = append(a.nets, n)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return a, nil
}

// Entries returns the entries the Allowlist was built from, trimmed.
func (a *Allowlist) Entries() []string { return append([]string(nil), a.entries...) }

// Empty reports whether the Allowlist refuses every target.
func (a *Allowlist) Empty() bool { return !a.all && len(a.patterns) == 0 && len(a.nets) == 0 }

func parsePattern(e string) (urlPattern, error) {
	bad := func(why string) (urlPattern, error) {
		return urlPattern{}, fmt.Errorf("dispatch: allow entry %q: %s; want scheme://host[:port] like https://*.example.com or http://127.0.0.1:*", e, why)
	}
	scheme, rest, _ := strings.Cut(e, "://")
	scheme = strings.ToLower(scheme)
	if scheme != "http" && scheme != "https" {
		return bad("scheme must be http or https")
	}
	rest = strings.TrimSuffix(rest, "/")
	if strings.ContainsAny(rest, "/?#@ ") {
		return bad("only scheme, host and port are matched (no path, query or credentials)")
	}
	p := urlPattern{raw: e, scheme: scheme, port: defaultPort(scheme)}
	host := rest
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return bad("unclosed [ in IPv6 host")
		}
		host = rest[1:end]
		after := rest[end+1:]
		if after != "" {
			if !strings.HasPrefix(after, ":") {
				return bad("junk after IPv6 host")
			}
			p.port = after[1:]
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return bad("bracketed host must be an IPv6 address without zone")
		}
		p.host = ip.Unmap().String()
	} else {
		if h, port, ok := strings.Cut(rest, ":"); ok {
			host, p.port = h, port
		}
		host = strings.TrimSuffix(strings.ToLower(host), ".")
		switch {
		case host == "*":
			p.anyHost = true
		case strings.HasPrefix(host, "*."):
			suffix := host[1:]
			if !validName(suffix[1:]) {
				return bad("wildcard suffix is not a valid host name")
			}
			p.suffix = suffix
		default:
			if ip, err := netip.ParseAddr(host); err == nil {
				p.host = ip.Unmap().String()
			} else if validName(host) {
				p.host = host
			} else {
				return bad("host is not a valid name, IP address, *.suffix or *")
			}
		}
	}
	if p.port != "*" {
		n, err := strconv.Atoi(p.port)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p.port {
			return bad("port must be 1..65535 or *")
		}
	}
	return p, nil
}

func parseRange(e string) (netip.Prefix, error) {
	if strings.Contains(e, "/") {
		n, err := netip.ParsePrefix(e)
		if err != nil || n.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("dispatch: allow entry %q: not a CIDR; want *, a URL pattern like https://*.example.com:*, or a CIDR like 10.0.0.0/8", e)
		}
		if n.Addr().Is4In6() && n.Bits() >= 96 {
			n = netip.PrefixFrom(n.Addr().Unmap(), n.Bits()-96)
		}
		return n.Masked(), nil
	}
	ip, err := netip.ParseAddr(e)
	if err != nil || ip.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("dispatch: allow entry %q: want *, a URL pattern like https://*.example.com:*, or an address range like 10.0.0.0/8", e)
	}
	ip = ip.Unmap()
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

// validName accepts DNS-ish host names: labels of letters, digits, '-' and
// '_' separated by dots.
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// target is a parsed push URL.
type target struct {
	url    *url.URL
	scheme string
	host   string     // lower case, no brackets, no trailing dot
	ip     netip.Addr // valid when host is an IP literal
	port   string
}

// endpoint is the key of per-endpoint breakers and bulkheads.
func (t target) endpoint() string {
	return t.scheme + "://" + net.JoinHostPort(t.host, t.port)
}

func parseTarget(raw string) (target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return target{}, fmt.Errorf("%w: %q is not a URL", ErrInvalidTarget, redact.URL(raw))
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "http" && scheme != "https") || u.Opaque != "" || u.Host == "" {
		return target{}, fmt.Errorf("%w: %q must be an absolute http:// or https:// URL", ErrInvalidTarget, redact.URL(raw))
	}
	if u.User != nil {
		return target{}, fmt.Errorf("%w: %q must not carry credentials", ErrInvalidTarget, redact.URL(raw))
	}
	t := target{url: u, scheme: scheme, port: u.Port()}
	t.host = strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if t.host == "" {
		return target{}, fmt.Errorf("%w: %q has no host", ErrInvalidTarget, redact.URL(raw))
	}
	if t.port == "" {
		t.port = defaultPort(scheme)
	} else if n, err := strconv.Atoi(t.port); err != nil || n < 1 || n > 65535 {
		return target{}, fmt.Errorf("%w: %q has a bad port", ErrInvalidTarget, redact.URL(raw))
	}
	if ip, err := netip.ParseAddr(t.host); err == nil {
		if ip.Zone() != "" {
			return target{}, fmt.Errorf("%w: %q: IPv6 zones are not supported", ErrInvalidTarget, redact.URL(raw))
		}
		t.ip = ip.Unmap()
		t.host = t.ip.String()
	}
	return t, nil
}

// CheckURL reports whether raw may be a push target: an absolute http or
// https URL that the Allowlist admits. A host name admitted only because
// address ranges exist passes here; its address is checked at connect time.
// Use it to validate definitions' http targets when they are registered.
func (a *Allowlist) CheckURL(raw string) error {
	t, err := parseTarget(raw)
	if err != nil {
		return err
	}
	return a.checkTarget(t)
}

func (a *Allowlist) checkTarget(t target) error {
	if a.all {
		return nil
	}
	for _, p := range a.patterns {
		if p.scheme == t.scheme && p.matchHostPort(t.host, t.port) {
			return nil
		}
	}
	if t.ip.IsValid() {
		if a.inRange(t.ip) {
			return nil
		}
	} else if len(a.nets) > 0 {
		return nil
	}
	if a.Empty() {
		return fmt.Errorf("%w: %s: the push allowlist is empty, so every push target is refused", ErrTargetNotAllowed, t.endpoint())
	}
	return fmt.Errorf("%w: %s matches no allow entry", ErrTargetNotAllowed, t.endpoint())
}

func (p urlPattern) matchHostPort(host, port string) bool {
	if p.port != "*" && p.port != port {
		return false
	}
	switch {
	case p.anyHost:
		return true
	case p.suffix != "":
		return len(host) > len(p.suffix) && strings.HasSuffix(host, p.suffix)
	default:
		return p.host == host
	}
}

func (a *Allowlist) inRange(ip netip.Addr) bool {
	for _, n := range a.nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// checkAddr is the connect-time check of a connection to ip made for the
// URL host host and port port.
func (a *Allowlist) checkAddr(host, port string, ip netip.Addr) error {
	if a.all {
		return nil
	}
	ip = ip.Unmap().WithZone("")
	if a.inRange(ip) {
		return nil
	}
	for _, p := range a.patterns {
		if p.matchHostPort(host, port) {
			if p.host != "" && p.host == ip.String() {
				return nil
			}
			if !restricted(ip) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %s resolved to %s, outside the allowlist", ErrTargetNotAllowed, net.JoinHostPort(host, port), ip)
}

// restricted addresses are never reached through a name pattern: a host
// name matched by "*.example.com" that resolves to a metadata service or to
// nowhere is refused unless an address range lists the address.
func restricted(ip netip.Addr) bool {
	return ip.IsUnspecified() || ip.IsMulticast() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// dialer returns a DialContext that checks every address it connects to
// against the Allowlist after name resolution, in the dialer's Control
// hook, so the check sees the exact address of the socket.
func (a *Allowlist) dialer(base *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dispatch: dial %q: %w", addr, err)
		}
		host = strings.TrimSuffix(strings.ToLower(host), ".")
		if ip, err := netip.ParseAddr(host); err == nil {
			host = ip.Unmap().WithZone("").String()
		}
		d := *base
		d.Control = nil
		d.ControlContext = func(_ context.Context, _, address string, _ syscall.RawConn) error {
			ipText, _, err := net.SplitHostPort(address)
			if err != nil {
				return fmt.Errorf("%w: address %q", ErrTargetNotAllowed, address)
			}
			ip, err := netip.ParseAddr(ipText)
			if err != nil {
				return fmt.Errorf("%w: address %q", ErrTargetNotAllowed, address)
			}
			return a.checkAddr(host, port, ip)
		}
		return d.DialContext(ctx, network, addr)
	}
}
