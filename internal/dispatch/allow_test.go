package dispatch

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestNewAllowlistRefusesBadEntries(t *testing.T) {
	t.Parallel()
	for _, e := range []string{
		"", "   ", "ftp://host", "http://host/path", "http://user@host", "http://host:0", "http://host:65536",
		"http://host:08", "http://ho st", "http://a.*.b", "http://[::1", "http://[1.2.3.4]",
		"10.0.0.0/33", "not a host", "10.0.0.1/8x", "http://host?q", "http://host:port", "fe80::1%eth0",
	} {
		if _, err := NewAllowlist([]string{e}); err == nil {
			t.Errorf("NewAllowlist(%q) accepted", e)
		}
	}
}

func TestAllowlistCheckURL(t *testing.T) {
	t.Parallel()
	a, err := NewAllowlist([]string{
		"http://127.0.0.1:*",
		"https://*.internal.example.com",
		"http://orders.svc:8080",
		"HTTP://[::1]:9000/",
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:1234/x", true},
		{"http://127.0.0.1/x", true},
		{"https://127.0.0.1:1234/x", false}, // the pattern is http only
		{"https://pay.internal.example.com/charge", true},
		{"https://a.b.internal.example.com:443/", true},
		{"https://PAY.Internal.Example.COM./charge", true},
		{"https://internal.example.com/", false}, // the wildcard needs a label
		{"https://pay.internal.example.com:8443/", false},
		{"http://pay.internal.example.com/", false},
		{"https://evilinternal.example.com/", false},
		{"http://orders.svc:8080/reserve", true},
		{"http://orders.svc/reserve", false},
		{"http://[::1]:9000/a", true},
		{"http://[::1]:9001/a", false},
		{"http://some.name/", false}, // no address range: only patterns admit names
		{"ftp://127.0.0.1/", false},
		{"http://user:pw@127.0.0.1/", false},
		{"/relative", false},
		{"http://", false},
		{"http://127.0.0.1:99999/", false},
		{"://bad", false},
	}
	for _, tc := range tests {
		err := a.CheckURL(tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("CheckURL(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrTargetNotAllowed) && !errors.Is(err, ErrInvalidTarget) {
			t.Errorf("CheckURL(%q) error %v wraps no sentinel", tc.url, err)
		}
	}

	ranges, err := NewAllowlist([]string{"10.0.0.0/8", "192.168.1.7"})
	if err != nil {
		t.Fatal(err)
	}
	tests = []struct {
		url string
		ok  bool
	}{
		{"http://10.1.2.3:5000/", true},
		{"https://10.255.255.255/", true},
		{"http://[::ffff:10.0.0.1]:80/", true}, // IPv4-mapped address in range
		{"http://11.0.0.1/", false},
		{"http://192.168.1.7:1/", true},
		{"http://192.168.1.8/", false},
		{"http://some.name/", true}, // a name under address ranges: decided at connect time
		{"http://127.0.0.1/", false},
		{"ftp://10.0.0.1/", false},
	}
	for _, tc := range tests {
		err := ranges.CheckURL(tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("CheckURL(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrTargetNotAllowed) && !errors.Is(err, ErrInvalidTarget) {
			t.Errorf("CheckURL(%q) error %v wraps no sentinel", tc.url, err)
		}
	}
}

func TestAllowlistEmptyAndStar(t *testing.T) {
	t.Parallel()
	empty, err := NewAllowlist(nil)
	if err != nil {
		t.Fatal(err)
	}
	err = empty.CheckURL("http://127.0.0.1/")
	if !errors.Is(err, ErrTargetNotAllowed) || !strings.Contains(err.Error(), "allowlist is empty") {
		t.Errorf("empty allowlist: %v", err)
	}
	star, err := NewAllowlist([]string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	if err := star.CheckURL("https://anything.example:1/x"); err != nil {
		t.Errorf("star: %v", err)
	}
	if err := star.checkAddr("x", "80", netip.MustParseAddr("169.254.169.254")); err != nil {
		t.Errorf("star refuses an address: %v", err)
	}
	if err := star.CheckURL("gopher://x/"); !errors.Is(err, ErrInvalidTarget) {
		t.Errorf("star accepts a non-http URL: %v", err)
	}
}

func TestAllowlistConnectTimeAddresses(t *testing.T) {
	t.Parallel()
	a, err := NewAllowlist([]string{"https://*.internal.example.com", "http://meta.example:*", "169.254.10.0/24", "10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host, port, ip string
		ok             bool
	}{
		{"pay.internal.example.com", "443", "172.16.0.5", true},       // a name pattern admits ordinary addresses
		{"pay.internal.example.com", "443", "169.254.169.254", false}, // but not the metadata service
		{"pay.internal.example.com", "443", "0.0.0.0", false},
		{"pay.internal.example.com", "443", "fe80::1", false},
		{"pay.internal.example.com", "443", "224.0.0.1", false},
		{"pay.internal.example.com", "443", "169.254.10.9", true}, // unless a range lists it
		{"meta.example", "80", "169.254.169.254", false},
		{"rebind.attacker.example", "80", "10.1.1.1", true}, // names outside patterns: ranges only
		{"rebind.attacker.example", "80", "127.0.0.1", false},
		{"rebind.attacker.example", "80", "::ffff:10.1.1.1", true},
	}
	for _, tc := range tests {
		err := a.checkAddr(tc.host, tc.port, netip.MustParseAddr(tc.ip))
		if (err == nil) != tc.ok {
			t.Errorf("checkAddr(%s:%s -> %s) = %v, want ok=%v", tc.host, tc.port, tc.ip, err, tc.ok)
		}
	}
}

func TestPushRefusesTargetsOutsideTheAllowlist(t *testing.T) {
	t.Parallel()
	s, hits := server(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	_, port, _ := net.SplitHostPort(s.Listener.Addr().String())

	t.Run("empty allowlist", func(t *testing.T) {
		b := setup(t, func(c *Config) { c.Allow = nil })
		b.push.Dispatch(newTask("e1", s.URL))
		r := b.done.wait(t, "e1")
		if r.Outcome != OutcomeFailure || r.ErrorCode != CodeTargetNotAllowed {
			t.Fatalf("got %q %q", r.Outcome, r.ErrorCode)
		}
		if b.push.CheckURL(s.URL) == nil {
			t.Error("CheckURL accepts under an empty allowlist")
		}
	})
	t.Run("name resolving outside the ranges is refused at connect time", func(t *testing.T) {
		// localhost resolves to 127.0.0.1 (and maybe ::1), never 127.0.0.2.
		b := setup(t, func(c *Config) { c.Allow = []string{"127.0.0.2/32"} })
		url := "http://localhost:" + port + "/x"
		if err := b.push.CheckURL(url); err != nil {
			t.Fatalf("CheckURL cannot know the address yet and must pass: %v", err)
		}
		b.push.Dispatch(newTask("c1", url))
		r := b.done.wait(t, "c1")
		if r.Outcome != OutcomeFailure || r.ErrorCode != CodeTargetNotAllowed {
			t.Fatalf("got %q %q (%s)", r.Outcome, r.ErrorCode, r.ErrorMessage)
		}
		if !strings.Contains(r.ErrorMessage, "outside the allowlist") {
			t.Errorf("message %q", r.ErrorMessage)
		}
		st, _ := breakerOf(b.push, "http://localhost:"+port)
		if st.Failures != 0 {
			t.Errorf("a refused target counts against the breaker: %+v", st)
		}
	})
	t.Run("name resolving inside the ranges is called", func(t *testing.T) {
		b := setup(t, func(c *Config) { c.Allow = []string{"127.0.0.0/8"} })
		b.push.Dispatch(newTask("c2", "http://localhost:"+port+"/x"))
		if r := b.done.wait(t, "c2"); r.Outcome != OutcomeSuccess {
			t.Fatalf("got %q %q (%s)", r.Outcome, r.ErrorCode, r.ErrorMessage)
		}
	})
	t.Run("url pattern", func(t *testing.T) {
		b := setup(t, func(c *Config) { c.Allow = []string{"http://localhost:*"} })
		b.push.Dispatch(newTask("c3", "http://localhost:"+port+"/x"))
		if r := b.done.wait(t, "c3"); r.Outcome != OutcomeSuccess {
			t.Fatalf("got %q %q (%s)", r.Outcome, r.ErrorCode, r.ErrorMessage)
		}
		b.push.Dispatch(newTask("c4", s.URL))
		if r := b.done.wait(t, "c4"); r.ErrorCode != CodeTargetNotAllowed {
			t.Fatalf("ip literal outside the pattern: %q %q", r.Outcome, r.ErrorCode)
		}
	})
	if hits.Load() != 2 {
		t.Errorf("%d hits, want 2 (the refused calls must not reach the participant)", hits.Load())
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	t.Parallel()
	other, otherHits := server(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/elsewhere", http.StatusTemporaryRedirect)
	})
	b := setup(t, nil)
	b.push.Dispatch(newTask("r1", s.URL))
	r := b.done.wait(t, "r1")
	if r.Outcome != OutcomeFailure || r.ErrorCode != "http_307" {
		t.Fatalf("got %q %q", r.Outcome, r.ErrorCode)
	}
	if !strings.Contains(r.ErrorMessage, "redirect not followed") || !strings.Contains(r.ErrorMessage, "/elsewhere") {
		t.Errorf("message %q", r.ErrorMessage)
	}
	if otherHits.Load() != 0 {
		t.Errorf("redirect target hit %d times", otherHits.Load())
	}
}

func TestInvalidTargets(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.Allow = []string{"*"} })
	for id, url := range map[string]string{"i1": "", "i2": "ftp://127.0.0.1/", "i3": "http://%zz", "i4": "http://u:p@127.0.0.1/"} {
		b.push.Dispatch(newTask(id, url))
		if r := b.done.wait(t, id); r.Outcome != OutcomeFailure || r.ErrorCode != CodeInvalidTarget {
			t.Errorf("%q: got %q %q", url, r.Outcome, r.ErrorCode)
		}
	}
}

func FuzzAllowlist(f *testing.F) {
	f.Add("http://127.0.0.1:*", "http://127.0.0.1:80/x", "127.0.0.1")
	f.Add("https://*.example.com", "https://a.example.com/", "10.0.0.1")
	f.Add("10.0.0.0/8", "http://[::ffff:10.0.0.1]/", "::1")
	f.Add("http://[::1]:*", "http://[fe80::1%25eth0]/", "fe80::1")
	f.Fuzz(func(t *testing.T, entry, url, ip string) {
		a, err := NewAllowlist(strings.Split(entry, ","))
		if err != nil {
			return
		}
		if err := a.CheckURL(url); err != nil && !errors.Is(err, ErrTargetNotAllowed) && !errors.Is(err, ErrInvalidTarget) {
			t.Fatalf("CheckURL error %v wraps no sentinel", err)
		}
		if addr, err := netip.ParseAddr(ip); err == nil {
			tgt, err := parseTarget(url)
			if err == nil {
				_ = a.checkAddr(tgt.host, tgt.port, addr)
			}
		}
	})
}
