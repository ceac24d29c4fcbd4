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
	"crypto/rsa"
	"maps"
	"sync"

	"github.com/go-logr/logr"
	toolscache "k8s.io/client-go/tools/cache"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// Index holds a KeyRecord per client_id, kept current by watch events on
// ServiceKeys, so a deleted or suspended ServiceKey stops new tokens as soon as its
// event arrives. Public keys are parsed once per key ID: a new record reuses the
// parsed keys of the record it replaces.
type Index struct {
	mu       sync.RWMutex
	byClient map[string]*KeyRecord
	log      logr.Logger
	onDelete []func(clientID string)
}

// OnDelete registers functions called with the client_id of every deleted
// ServiceKey, so per-client state elsewhere (rate limits, lastUsedTime bookkeeping)
// is dropped with it instead of growing with every ServiceKey ever seen. Register
// them before the informer starts.
func (ix *Index) OnDelete(fns ...func(clientID string)) {
	ix.onDelete = append(ix.onDelete, fns...)
}

// NewIndex returns an empty index.
func NewIndex(log logr.Logger) *Index {
	return &Index{byClient: map[string]*KeyRecord{}, log: log}
}

// Record implements Lookup.
func (ix *Index) Record(clientID string) (*KeyRecord, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	r, ok := ix.byClient[clientID]
	return r, ok
}

// Len is the number of indexed ServiceKeys.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.byClient)
}

// Handler is the informer event handler that maintains the index.
func (ix *Index) Handler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { ix.upsert(obj) },
		UpdateFunc: func(_, obj any) { ix.upsert(obj) },
		DeleteFunc: func(obj any) {
			if sk, ok := unwrapDeleted(obj).(*v1.ServiceKey); ok {
				id := v1.ClientID(sk.Namespace, sk.Name)
				ix.mu.Lock()
				delete(ix.byClient, id)
				ix.mu.Unlock()
				ix.deleted(id)
			}
		},
	}
}

func (ix *Index) deleted(id string) {
	for _, fn := range ix.onDelete {
		fn(id)
	}
}

// Resync brings the records of a snapshot up to date with a fresh list of ServiceKeys
// taken after it, without waiting for the informer: after an API server outage,
// client-go resumes a watch only after its retry backoff (up to a minute or more), and
// until then a ServiceKey deleted or suspended meanwhile would still be honoured. A
// record is replaced or dropped only if it is still the one in the snapshot (compared
// under the lock), so whatever the informer delivered since wins. (An event the
// informer delivers after Finish but older than the list, from a watch resumed at an
// old resourceVersion, replaces the record again until the informer's own later events
// arrive in the same stream.) ServiceKeys that are
// not in the snapshot (created during the outage) are left to the informer: adding one
// here could resurrect a key the informer deletes in between. Feed the list page by
// page to Apply, then call Finish; only the names seen are kept between pages.
type Resync struct {
	ix       *Index
	snapshot map[string]*KeyRecord
	seen     map[string]struct{}
	updated  int
}

// StartResync snapshots the index; list the ServiceKeys after calling it.
func (ix *Index) StartResync() *Resync {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return &Resync{ix: ix, snapshot: maps.Clone(ix.byClient), seen: map[string]struct{}{}}
}

// Apply replaces the snapshot's records whose ServiceKey changed (another UID or
// resourceVersion) with records of the listed objects.
func (r *Resync) Apply(listed []v1.ServiceKey) {
	for i := range listed {
		sk := &listed[i]
		id := v1.ClientID(sk.Namespace, sk.Name)
		r.seen[id] = struct{}{}
		old, ok := r.snapshot[id]
		if !ok || (sk.UID == old.UID && sk.ResourceVersion == old.ResourceVersion) {
			continue
		}
		rec, err := NewKeyRecord(sk, memoParser(old))
		if err != nil {
			r.ix.log.Error(err, "ServiceKey partly unusable", "client_id", id)
		}
		r.ix.mu.Lock()
		if r.ix.byClient[id] == old {
			r.ix.byClient[id] = rec
			r.updated++
		}
		r.ix.mu.Unlock()
	}
}

// Finish drops the snapshot's records the list did not contain (deleted meanwhile)
// and reports how many records were updated and deleted.
func (r *Resync) Finish() (updated, deleted int) {
	for id, old := range r.snapshot {
		if _, ok := r.seen[id]; ok {
			continue
		}
		r.ix.mu.Lock()
		drop := r.ix.byClient[id] == old
		if drop {
			delete(r.ix.byClient, id)
		}
		r.ix.mu.Unlock()
		if drop {
			r.ix.deleted(id)
			deleted++
		}
	}
	return r.updated, deleted
}

func (ix *Index) upsert(obj any) {
	sk, ok := obj.(*v1.ServiceKey)
	if !ok {
		return
	}
	id := v1.ClientID(sk.Namespace, sk.Name)
	prev, _ := ix.Record(id)
	rec, err := NewKeyRecord(sk, memoParser(prev))
	if err != nil {
		ix.log.Error(err, "ServiceKey partly unusable", "client_id", id)
	}
	ix.mu.Lock()
	ix.byClient[id] = rec
	ix.mu.Unlock()
}

// memoParser reuses the parsed keys of the previous record of the same ServiceKey.
func memoParser(prev *KeyRecord) KeyParser {
	known := map[string]*rsa.PublicKey{}
	if prev != nil {
		for _, k := range prev.Keys {
			known[k.ID] = k.Key
		}
	}
	return func(id, pem string) (*rsa.PublicKey, error) {
		if k, ok := known[id]; ok {
			return k, nil
		}
		return ParsePublicKey(id, pem)
	}
}
