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

package keyutil_test

import (
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// FuzzKeyFile feeds arbitrary bytes to the key-file parser and the private-key
// parser a client runs on a mounted key.json: no panic, errors never quote the
// private key, and a file that parses survives a round trip unchanged.
func FuzzKeyFile(f *testing.F) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	for _, enc := range []v1.PrivateKeyEncoding{v1.PKCS1, v1.PKCS8} {
		pem, err := keyutil.EncodePrivateKey(key, enc)
		if err != nil {
			f.Fatal(err)
		}
		data, err := keyutil.KeyFile{KeyID: "k", ClientID: "team/app", UserID: "system:servicekey:team:app", TokenURI: "https://t/oauth2/token", PrivateKey: string(pem)}.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"key_id":"k","client_id":"c","private_key":"-----BEGIN RSA PRIVATE KEY-----\nAA==\n-----END RSA PRIVATE KEY-----\n"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := keyutil.ParseKeyFile(data)
		if err != nil {
			return
		}
		_, _, perr := keyutil.ParsePrivateKey([]byte(kf.PrivateKey))
		if perr != nil && len(kf.PrivateKey) >= 16 && strings.Contains(perr.Error(), kf.PrivateKey) {
			t.Fatal("the private-key error quotes the key")
		}
		out, err := kf.Marshal()
		if err != nil {
			t.Fatalf("a parsed key file does not encode: %v", err)
		}
		again, err := keyutil.ParseKeyFile(out)
		if err != nil || again != kf {
			t.Fatalf("round trip changed the key file: %v", err)
		}
	})
}
