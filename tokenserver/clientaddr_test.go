/*
Copyright 2026 The servicekey-operator Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package tokenserver

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestClientAddr(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	cases := map[string]struct {
		remote, xff string
		forwarded   string
		want        string
	}{
		"direct client, XFF ignored":    {"192.0.2.7:5555", "203.0.113.9", "", "192.0.2.7"},
		"via trusted proxy":             {"10.1.2.3:443", "203.0.113.9", "", "203.0.113.9"},
		"spoofed hop before the proxy":  {"10.1.2.3:443", "1.1.1.1, 203.0.113.9", "", "203.0.113.9"},
		"two trusted proxies":           {"10.1.2.3:443", "203.0.113.9, 10.9.9.9", "", "203.0.113.9"},
		"trusted proxy, no XFF":         {"10.1.2.3:443", "", "", "invalid IP"},
		"trusted proxy, garbage XFF":    {"10.1.2.3:443", "not-an-ip", "", "invalid IP"},
		"trusted proxy, ip:port hop":    {"10.1.2.3:443", "203.0.113.9:4711", "", "invalid IP"},
		"trusted proxy, empty hop":      {"10.1.2.3:443", "203.0.113.9, ", "", "invalid IP"},
		"trusted proxy, zoned hop":      {"10.1.2.3:443", "fe80::1%eth0", "", "invalid IP"},
		"trusted proxy, Forwarded only": {"10.1.2.3:443", "", "for=203.0.113.9", "invalid IP"},
		"garbage left of a good hop":    {"10.1.2.3:443", "junk, 203.0.113.9", "", "203.0.113.9"},
		"every hop trusted":             {"10.1.2.3:443", "10.7.7.7, 10.9.9.9", "", "10.7.7.7"},
		"IPv4-mapped IPv6 peer":         {"[::ffff:192.0.2.7]:1", "", "", "192.0.2.7"},
		"IPv6 client via trusted proxy": {"10.1.2.3:443", "2001:db8::1", "", "2001:db8::1"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tc.remote, Header: http.Header{}}
			if tc.xff != "" {
				r.Header.Set("X-Forwarded-For", tc.xff)
			}
			if tc.forwarded != "" {
				r.Header.Set("Forwarded", tc.forwarded)
			}
			if got := clientAddr(r, trusted); got.String() != tc.want {
				t.Errorf("clientAddr = %s, want %s", got, tc.want)
			}
		})
	}
}
