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

// Command resource-server is a protected API: /hello needs a valid access token with
// the scope "read", verified offline against the token server's JWKS.
//
//	go run ./examples/resource-server --issuer https://token.example.com --audience https://billing.internal
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/servicekey-operator/servicekey-operator/verifier"
)

func main() {
	issuer := flag.String("issuer", "", "the token server's issuer")
	audience := flag.String("audience", "", "this API's identifier (the tokens' aud)")
	jwks := flag.String("jwks-url", "", "JWKS URL when discovery through the issuer is not reachable")
	listen := flag.String("listen", ":8000", "listen address")
	leeway := flag.Duration("leeway", 30*time.Second, "clock skew allowed for the tokens' exp and nbf")
	flag.Parse()
	v, err := verifier.New(context.Background(), verifier.Options{Issuer: *issuer, Audience: *audience, JWKSURL: *jwks, Leeway: *leeway})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.Handle("/hello", v.Require("read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := verifier.ClaimsFrom(r.Context())
		fmt.Fprintf(w, "hello %s (%s)\n", claims.ClientID, claims.Subject)
	})))
	srv := &http.Server{Addr: *listen, Handler: accessLog(mux), ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// accessLog writes one line per request: method, path and status, never a header
// (the Authorization header carries the token).
func accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		fmt.Printf("%s %s %d\n", r.Method, r.URL.Path, rec.status)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}
