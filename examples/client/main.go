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

// Command client calls a protected API with the mounted key file: tokens are fetched,
// cached, refreshed and retried by the client kit.
//
//	go run ./examples/client --key-file /var/run/servicekey/key.json --url https://billing.internal/hello
//
// With --interval it calls the API again and again until it is stopped, one line per
// call naming the key that signed the grant, and the key the mounted file holds: a
// running pod's switch to a rotated key shows in its log.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/servicekey-operator/servicekey-operator/client"
)

func main() {
	keyFile := flag.String("key-file", "/var/run/servicekey/key.json", "the mounted key.json")
	url := flag.String("url", "", "the protected URL to GET")
	scopes := flag.String("scope", "", "comma-separated scopes")
	origins := flag.String("allowed-origin", "", "comma-separated origins the token may be sent to; default: the key's URL audiences")
	insecure := flag.Bool("allow-insecure-http", false, "send grants and tokens over plain http to hosts other than loopback (only where the network encrypts the hop, such as a mesh with mTLS, or in a test cluster)")
	interval := flag.Duration("interval", 0, "call the URL every interval until SIGTERM (0: once)")
	flag.Parse()
	split := func(s string) []string { return strings.FieldsFunc(s, func(r rune) bool { return r == ',' }) }
	// The token requests' own client has the timeout too (Options.HTTPClient).
	httpClient, err := client.NewHTTPClient(client.Options{KeyFile: *keyFile, Scopes: split(*scopes),
		AllowedOrigins: split(*origins), AllowInsecureHTTP: *insecure, HTTPClient: &http.Client{Timeout: 10 * time.Second}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	httpClient.Timeout = 10 * time.Second
	src := httpClient.Transport.(*client.Transport).Source
	if *interval <= 0 {
		status, body, err := call(httpClient, *url)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%s\n%s\n", status, body)
		if !ok(status) {
			os.Exit(1) // a Job that calls once fails, and is retried, on a refused call
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	calls, failed := 0, 0
	for t := time.NewTicker(*interval); ; {
		select {
		case <-ctx.Done():
			fmt.Printf("stopped: %d calls, %d failed\n", calls, failed)
			return
		case <-t.C:
		}
		calls++
		status, body, err := call(httpClient, *url)
		fileKey := "?"
		if kf, err := client.LoadKeyFile(*keyFile); err == nil {
			fileKey = kf.KeyID
		}
		line := fmt.Sprintf("%s call=%d key=%s file_key=%s", time.Now().UTC().Format(time.RFC3339Nano), calls, src.KeyID(), fileKey)
		if err == nil && !ok(status) {
			err = fmt.Errorf("%s: %s", status, body)
		}
		if err != nil {
			failed++
			fmt.Printf("%s error=%q\n", line, err.Error())
			continue
		}
		fmt.Printf("%s status=%q body=%q\n", line, status, body)
	}
}

// call GETs url and returns the status line and the body, trimmed.
// ok: the API answered 2xx.
func ok(status string) bool { return strings.HasPrefix(status, "2") }

func call(c *http.Client, url string) (string, string, error) {
	resp, err := c.Get(url) //nolint:noctx // the clients' Timeouts bound it
	if err != nil {
		return "", "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", "", fmt.Errorf("read body: %w", err)
	}
	return resp.Status, strings.TrimSpace(string(body)), nil
}
