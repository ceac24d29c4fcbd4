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
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// Staged is a key pair (and client secret) generated for a ServiceKey and published,
// or about to be published, in its status while its private half is not yet in the
// Secret. It lives in the controller's memory only: if the process stops, the
// published Pending key turns Retiring on the next reconcile (normally nobody holds
// it) and a new one is made.
type Staged struct {
	// UID is the ServiceKey's, so a ServiceKey deleted and created again under the same
	// name never inherits a staged key.
	UID types.UID
	// Key is what was generated.
	Key NewKey
	// Cause is why; reported when the key becomes Active.
	Cause RekeyCause
}

// stash holds at most one Staged entry per ServiceKey. The workqueue never runs two
// reconciles of one ServiceKey at once; the mutex guards the map across ServiceKeys.
type stash struct {
	mu sync.Mutex
	m  map[types.NamespacedName]*Staged
}

func (s *stash) get(name types.NamespacedName, uid types.UID) *Staged {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.m[name]; st != nil && st.UID == uid {
		return st
	}
	return nil
}

func (s *stash) put(name types.NamespacedName, st *Staged) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[types.NamespacedName]*Staged{}
	}
	s.m[name] = st
}

// forget drops the entry once its key is in the Secret, or its ServiceKey is gone.
func (s *stash) forget(name types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, name)
}
