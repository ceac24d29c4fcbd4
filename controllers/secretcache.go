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

package controllers

import (
	"bytes"
	"encoding/json"
	"maps"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// CacheOptions make the manager's cache hold only key Secrets (those carrying the
// auth.servicekey.dev/service-key label), never every Secret in the cluster, and
// those only as summaries (SummarizeSecret): digests and the facts the decisions
// need, never the private key. Other Secrets are read live, and only by name, when a
// key's Secret is not in the cache. No cached object keeps its managedFields.
func CacheOptions() cache.Options {
	selector := labels.NewSelector()
	if req, err := labels.NewRequirement(v1.LabelServiceKey, selection.Exists, nil); err == nil {
		selector = selector.Add(*req)
	}
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Label: selector, Transform: SummarizeSecret},
		},
	}
}

// summaryKey is the Data entry of a summarized Secret that holds its secretFacts. A
// "/" is not allowed in a Secret's data keys, so no real entry has this name.
const summaryKey = "servicekey.dev/summary"

// secretFacts is what the decisions need to know about a key Secret's private key
// and client secret, without them.
type secretFacts struct {
	// KeyID of the private key in private-key.pem; empty when absent or unreadable.
	KeyID    string                `json:"keyID,omitempty"`
	Bits     int                   `json:"bits,omitempty"`
	Encoding v1.PrivateKeyEncoding `json:"encoding,omitempty"`
}

// SummarizeSecret is the cache transform of key Secrets: each data entry is replaced
// by its digest and the facts about the private key are added under summaryKey, so
// the controller's memory holds no private key and no client secret (about 4 KiB
// less per ServiceKey), and managedFields are dropped. When the controller has to
// write a Secret whose private key it does not hold, it reads it live.
func SummarizeSecret(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil
	}
	s.ManagedFields = nil
	if _, done := s.Data[summaryKey]; done {
		return s, nil // already summarized: hashing the annotation again would change it
	}
	s.Data = summarize(s.Data)
	// A Secret once written with `kubectl apply` carries its whole data, private key
	// included, in this annotation: keep it only as a digest too.
	if v, ok := s.Annotations[lastApplied]; ok {
		s.Annotations = maps.Clone(s.Annotations)
		s.Annotations[lastApplied] = keyutil.HashClientSecret(v)
	}
	return s, nil
}

// lastApplied is kubectl's record of the last applied object.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// summarize returns the digests of data and its facts; data already summarized is
// returned as is.
func summarize(data map[string][]byte) map[string][]byte {
	if _, done := data[summaryKey]; done {
		return data
	}
	out := make(map[string][]byte, len(data)+1)
	for name, value := range data {
		out[name] = []byte(entryDigest(name, value, data))
	}
	var facts secretFacts
	if key, enc, err := keyutil.ParsePrivateKey(data[v1.SecretKeyPrivateKey]); err == nil {
		if id, err := keyutil.KeyID(&key.PublicKey); err == nil {
			facts = secretFacts{KeyID: id, Bits: key.N.BitLen(), Encoding: enc}
		}
	}
	out[summaryKey], _ = json.Marshal(facts) // a struct of strings and an int always encodes
	return out
}

// factsOf reads the facts of summarized data.
func factsOf(summary map[string][]byte) secretFacts {
	var f secretFacts
	if json.Unmarshal(summary[summaryKey], &f) != nil {
		return secretFacts{}
	}
	return f
}

// entryDigest is the digest of one data entry, in the status form of a client
// secret's hash, so that a client secret's digest is its published hash. key.json
// is digested without its private key (known by the digest of private-key.pem) when
// it is exactly what the controller writes for that private key; then its digest can
// be computed from the fields alone when the private key is not at hand.
func entryDigest(name string, value []byte, data map[string][]byte) string {
	if name == v1.SecretKeyJSON {
		if kf, err := keyutil.ParseKeyFile(value); err == nil && kf.PrivateKey == string(data[v1.SecretKeyPrivateKey]) {
			if again, err := kf.Marshal(); err == nil && bytes.Equal(again, value) {
				return keyFileDigest(kf)
			}
		}
	}
	return keyutil.HashClientSecret(string(value))
}

// keyFileDigest is the digest of a canonical key.json, its private key left out.
func keyFileDigest(kf keyutil.KeyFile) string {
	kf.PrivateKey = ""
	data, err := kf.Marshal()
	if err != nil {
		return ""
	}
	return "keyfile:" + keyutil.HashClientSecret(string(data))
}

// digestsOf is the digests of summarized data, without the facts.
func digestsOf(summary map[string][]byte) map[string]string {
	out := make(map[string]string, len(summary))
	for name, d := range summary {
		if name != summaryKey {
			out[name] = string(d)
		}
	}
	return out
}

// fullData reports whether data holds the Secret's content rather than a summary.
func fullData(data map[string][]byte) bool {
	_, summarized := data[summaryKey]
	return !summarized
}
