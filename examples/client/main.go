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
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/servicekey-operator/servicekey-operator/client"
)

func main() {
	keyFile := flag.String("key-file", "/var/run/servicekey/key.json", "the mounted key.json")
	url := flag.String("url", "", "the protected URL to GET")
	scopes := flag.String("scope", "", "comma-separated scopes")
	origins := flag.String("allowed-origin", "", "comma-separated origins the token may be sent to; default: the key's URL audiences")
	flag.Parse()
	split := func(s string) []string { return strings.FieldsFunc(s, func(r rune) bool { return r == ',' }) }
	httpClient, err := client.NewHTTPClient(client.Options{KeyFile: *keyFile, Scopes: split(*scopes), AllowedOrigins: split(*origins)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	resp, err := httpClient.Get(*url) //nolint:noctx // an example
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("%s\n%s\n", resp.Status, body)
}
