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

package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	uberzap "go.uber.org/zap"
	"k8s.io/client-go/rest"
)

func TestRunCommandLine(t *testing.T) {
	cases := map[string]struct {
		args     []string
		wantCode int
		wantOut  string
	}{
		"no command":                       {args: nil, wantCode: exitUsage, wantOut: "Usage: servicekey-operator <command>"},
		"unknown command":                  {args: []string{"frobnicate"}, wantCode: exitUsage, wantOut: `unknown command "frobnicate"`},
		"help":                             {args: []string{"help"}, wantCode: 0, wantOut: "controller"},
		"--help":                           {args: []string{"--help"}, wantCode: 0, wantOut: "Commands:"},
		"controller -h":                    {args: []string{"controller", "-h"}, wantCode: 0, wantOut: "-leader-elect"},
		"controller bad flag":              {args: []string{"controller", "--no-such-flag"}, wantCode: exitUsage, wantOut: "flag provided but not defined"},
		"controller extra arg":             {args: []string{"controller", "extra"}, wantCode: exitUsage, wantOut: "unexpected arguments"},
		"controller bad signing algorithm": {args: []string{"controller", "--signing-key-algorithm", "HS256"}, wantCode: exitUsage, wantOut: "ES256 or RS256"},
		"controller rotation under token TTL": {args: []string{"controller", "--signing-key-rotation", "30m"}, wantCode: exitUsage,
			wantOut: "--signing-key-rotation must be longer than --max-access-token-ttl"},
		"controller bad signing secret": {args: []string{"controller", "--signing-key-secret", "a/b/c"}, wantCode: exitUsage,
			wantOut: `--signing-key-secret must be namespace/name, got "a/b/c"`},
		"controller bad key pool size": {args: []string{"controller", "--key-pool-sizes", "2048,1024"}, wantCode: exitUsage,
			wantOut: `--key-pool-sizes: "1024" is not a ServiceKey key size`},
		"controller negative API QPS": {args: []string{"controller", "--kube-api-qps", "-3"}, wantCode: exitUsage,
			wantOut: "--kube-api-qps and --kube-api-burst must be finite and not negative"},
		"token-server NaN API QPS": {args: []string{"token-server", "--issuer", "https://t", "--kube-api-qps", "NaN"}, wantCode: exitUsage,
			wantOut: "--kube-api-qps and --kube-api-burst must be finite"},
		"token no key file":      {args: []string{"token"}, wantCode: exitUsage, wantOut: "--key-file is required"},
		"token missing key file": {args: []string{"token", "--key-file", "/nonexistent/key.json"}, wantCode: 1, wantOut: "token: read key file"},
		"token-server -h":        {args: []string{"token-server", "-h"}, wantCode: 0, wantOut: "-signing-key-secret"},
		"token-server no issuer": {args: []string{"token-server"}, wantCode: exitUsage, wantOut: "--issuer is required"},
		"token-server introspection scope outside servicekey:": {args: []string{"token-server", "--issuer", "https://t", "--introspection-scope", "introspect"},
			wantCode: exitUsage, wantOut: `--introspection-scope must start with "servicekey:"`},
		"token-server bad secret": {args: []string{"token-server", "--issuer", "https://t", "--signing-key-secret", "nons"}, wantCode: exitUsage, wantOut: "namespace/name"},
		"token-server bad proxy CIDR": {args: []string{"token-server", "--issuer", "https://t", "--signing-key-secret", "a/b", "--trusted-proxies", "10.0.0.0/99"},
			wantCode: exitUsage, wantOut: "--trusted-proxies"},
		"controller bad kubeconfig": {
			args:     []string{"controller", "--kubeconfig", "/nonexistent/kubeconfig", "--metrics-bind-address", "0", "--health-probe-bind-address", "0"},
			wantCode: 1, wantOut: "",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(tc.args, io.Discard, &stderr)
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d (stderr: %s)", code, tc.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.wantOut) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tc.wantOut)
			}
		})
	}
}

func TestCapVerbosity(t *testing.T) {
	cases := map[string]struct {
		flag        string
		wantClamped bool
	}{
		"info":                {"info", false},
		"debug":               {"debug", false},
		"V(7)":                {"7", false},
		"V(10) shows bodies":  {"10", true},
		"V(100) shows bodies": {"100", true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f, err := parseControllerFlags([]string{"--zap-log-level", tc.flag}, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if got := capVerbosity(&f.zapOpts, 7); got != tc.wantClamped {
				t.Errorf("clamped = %v, want %v", got, tc.wantClamped)
			}
			if lvl, ok := f.zapOpts.Level.(uberzap.AtomicLevel); ok && lvl.Level() < -7 {
				t.Errorf("level %d is more verbose than V(7)", lvl.Level())
			}
		})
	}
}

// TestRestConfigLimitsWhateverTheSource: --kubeconfig and $KUBECONFIG yield the same
// client-side rate limit. Through the flag, client-go's default of 5 requests/s used
// to apply while $KUBECONFIG turned limiting off.
func TestRestConfigLimitsWhateverTheSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	kubeconfig := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: not-a-secret}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		limits    apiLimits
		wantQPS   float32
		wantBurst int
	}{
		"default: the API server's priority and fairness": {apiLimits{}, -1, 0},
		"a QPS, burst twice as much":                      {apiLimits{qps: 50}, 50, 100},
		"a QPS and a burst":                               {apiLimits{qps: 50, burst: 80}, 50, 80},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			byFlag, err := restConfig(path, tc.limits)
			if err != nil {
				t.Fatal(err)
			}
			t.Setenv("KUBECONFIG", path)
			byEnv, err := restConfig("", tc.limits)
			if err != nil {
				t.Fatal(err)
			}
			for source, cfg := range map[string]*rest.Config{"--kubeconfig": byFlag, "$KUBECONFIG": byEnv} {
				if cfg.QPS != tc.wantQPS || cfg.Burst != tc.wantBurst || cfg.Host != "https://127.0.0.1:6443" {
					t.Errorf("%s: QPS %v burst %d host %s; want QPS %v burst %d", source, cfg.QPS, cfg.Burst, cfg.Host, tc.wantQPS, tc.wantBurst)
				}
			}
		})
	}
}
