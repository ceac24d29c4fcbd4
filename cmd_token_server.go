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
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/servicekey-operator/servicekey-operator/api/policy"
	"github.com/servicekey-operator/servicekey-operator/tokenserver"
)

// sharedStatePasswordEnv holds the Redis password when it is not in the URL: the chart
// fills it from a Secret, so it is in neither the pod spec nor the process list.
const sharedStatePasswordEnv = "SERVICEKEY_SHARED_STATE_PASSWORD"

// tokenServerFlags are the token-server subcommand's flags.
type tokenServerFlags struct {
	common
	opts           tokenserver.Options
	signingSecret  string
	namespaces     string
	audiences      string
	trustedProxies string
	shutdownDelay  time.Duration
}

func parseTokenServerFlags(args []string, stderr io.Writer) (*tokenServerFlags, error) {
	f := &tokenServerFlags{}
	fs := flag.NewFlagSet("token-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.bind(fs)
	fs.StringVar(&f.opts.Listen, "listen", ":8080", "address of the token server (HTTP; terminate TLS in front of it)")
	fs.StringVar(&f.opts.Issuer, "issuer", "", "issuer identifier (RFC 8414), e.g. https://token.example.com (required)")
	fs.StringVar(&f.opts.TokenURL, "token-url", "", "public URL of the token endpoint; default: <issuer>/oauth2/token")
	fs.StringVar(&f.signingSecret, "signing-key-secret", tokenserver.DefaultSigningSecret, "namespace/name of the signing-key Secret (the generated RBAC names the default)")
	fs.StringVar(&f.namespaces, "namespaces", "", "comma-separated namespaces whose ServiceKeys are served; default: all")
	fs.StringVar(&f.audiences, "default-audience", "", "comma-separated aud of tokens of ServiceKeys without spec.audiences; default: the issuer")
	fs.StringVar(&f.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs of proxies whose X-Forwarded-For is believed")
	fs.DurationVar(&f.opts.MaxTTL, "max-access-token-ttl", time.Hour, "cap on every ServiceKey's accessTokenTTL")
	fs.IntVar(&f.opts.ReplayCacheSize, "replay-cache-size", 200000, "unexpired assertions remembered at once by this replica (replay protection; 160 bytes each)")
	fs.IntVar(&f.opts.ReplayPerClient, "replay-cache-per-client", 5000, "unexpired assertions remembered at once per client; beyond it the client gets 429")
	fs.Float64Var(&f.opts.RateLimit, "rate-limit", 10, "token requests per second per client (0 disables); excess gets 429 with Retry-After")
	fs.IntVar(&f.opts.RateBurst, "rate-burst", 20, "burst of the per-client rate limit")
	fs.DurationVar(&f.opts.LastUsedGranularity, "last-used-granularity", time.Hour, "write a ServiceKey's status.lastUsedTime at most this often")
	fs.StringVar(&f.opts.MetricsListen, "metrics-bind-address", ":9090", "address of the Prometheus metrics endpoint (empty disables it)")
	fs.Float64Var(&f.opts.IntrospectionRateLimit, "introspection-rate-limit", 50, "introspection requests per second per caller (0 disables); excess gets 429 with Retry-After")
	fs.IntVar(&f.opts.IntrospectionRateBurst, "introspection-rate-burst", 100, "burst of the per-caller introspection rate limit")
	fs.IntVar(&f.opts.MaxInFlight, "max-in-flight", 512, "token and introspection requests answered at once (0: no bound); beyond it 503 with Retry-After")
	fs.StringVar(&f.opts.SharedState, "shared-state", "", "redis://[user:password@]host:port/db (or rediss:// for TLS) of the Redis or Valkey the replicas share "+
		"replay protection, rate limits and refresh tokens in; empty keeps them in this replica's memory. The password may come from $"+sharedStatePasswordEnv+" instead")
	fs.IntVar(&f.opts.RefreshFamiliesPerClient, "refresh-token-families-per-client", tokenserver.DefaultFamiliesPerClient,
		"live refresh-token families per client; beyond it the family that ends first is dropped")
	fs.DurationVar(&f.shutdownDelay, "shutdown-delay", 5*time.Second, "after SIGTERM, keep serving this long with /readyz failing and connections closed after each response, "+
		"so the Service stops sending requests here before the listener closes (keep it under the pod's terminationGracePeriodSeconds)")
	fs.StringVar(&f.opts.IntrospectionScope, "introspection-scope", tokenserver.DefaultIntrospectionScope, "scope a caller's access token needs for /oauth2/introspect")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return f, f.complete()
}

// complete checks and converts the flag values into Options.
func (f *tokenServerFlags) complete() error {
	if f.opts.Issuer == "" {
		return errors.New("--issuer is required")
	}
	if err := f.kubeAPI.check(); err != nil {
		return err
	}
	var err error
	if f.opts.SigningSecret, err = parseRef("--signing-key-secret", f.signingSecret); err != nil {
		return err
	}
	f.opts.Namespaces = splitList(f.namespaces)
	f.opts.DefaultAudience = splitList(f.audiences)
	if len(f.opts.DefaultAudience) == 0 {
		f.opts.DefaultAudience = []string{f.opts.Issuer}
	}
	for _, c := range splitList(f.trustedProxies) {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return fmt.Errorf("--trusted-proxies: %w", err)
		}
		f.opts.TrustedProxies = append(f.opts.TrustedProxies, p)
	}
	// A wildcard in a ServiceKeyPolicy never matches a servicekey: scope; any other
	// introspection scope would be granted to every namespace by a "*" pattern.
	if !strings.HasPrefix(f.opts.IntrospectionScope, policy.ReservedScopePrefix) {
		return fmt.Errorf("--introspection-scope must start with %q (a reserved scope no policy wildcard matches), got %q",
			policy.ReservedScopePrefix, f.opts.IntrospectionScope)
	}
	if f.opts.MaxTTL <= 0 || f.opts.ReplayCacheSize < 1 || f.opts.ReplayPerClient < 1 || f.opts.RefreshFamiliesPerClient < 1 {
		return errors.New("--max-access-token-ttl, --replay-cache-size, --replay-cache-per-client and --refresh-token-families-per-client must be positive")
	}
	f.opts.SharedStatePassword = os.Getenv(sharedStatePasswordEnv)
	if f.opts.SharedState != "" {
		if _, err := tokenserver.ParseRedisURL(f.opts.SharedState); err != nil {
			return err
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// serveTokens runs the token server until it is stopped.
func serveTokens(f *tokenServerFlags, log logr.Logger) error {
	cfg, err := restConfig(f.kubeconfig, f.kubeAPI)
	if err != nil {
		return err
	}
	scheme, err := newScheme()
	if err != nil {
		return err
	}
	f.opts.Clock, f.opts.Log = clock.RealClock{}, log
	signalled := ctrl.SetupSignalHandler()
	// Once serving, the servers outlive the signal by --shutdown-delay (Running.Drain);
	// a signal before that (a cache that never syncs) stops the start at once.
	ctx, stop := context.WithCancel(context.WithoutCancel(signalled))
	defer stop()
	serving := make(chan struct{})
	go func() {
		select {
		case <-signalled.Done():
			select {
			case <-serving:
			default:
				stop()
			}
		case <-serving:
		}
	}()
	// Before Start, so that a slow cache sync can be profiled too.
	if err := servePprof(ctx, f.pprofAddr, log); err != nil {
		return err
	}
	running, err := tokenserver.Start(ctx, cfg, scheme, f.opts)
	if err != nil {
		return err
	}
	close(serving)
	log.Info("serving", "address", running.Addr.String(), "issuer", f.opts.Issuer, "token_url", running.Server.TokenURL)
	<-signalled.Done()
	log.Info("shutting down: not ready, serving on for the shutdown delay", "delay", f.shutdownDelay.String())
	// A second signal ends the delay at once (SetupSignalHandler exits on it).
	running.Drain(context.Background(), f.shutdownDelay)
	stop()
	running.Wait()
	return nil
}
