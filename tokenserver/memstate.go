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
	"context"
	"slices"
	"sync"
	"time"
)

// DefaultFamiliesPerClient bounds the live refresh-token families of one client: each
// grant of a key with refresh tokens starts one, so without a bound a client could
// fill the state by signing grants. Beyond it the family that ends first is dropped.
const DefaultFamiliesPerClient = 100

// MemoryState is State in this replica's memory: right for one replica. With several,
// each remembers only the assertions it saw, gives each client its own rate limit,
// and knows only the refresh tokens it issued (RedisState shares them).
type MemoryState struct {
	// Replay remembers assertions; Limiter is the per-client rate limit (nil: none).
	Replay   *ReplayCache
	Limiter  *Limiter
	families familyStore
}

// NewMemoryState keeps at most familiesPerClient refresh-token families per client.
func NewMemoryState(replay *ReplayCache, limiter *Limiter, familiesPerClient int) *MemoryState {
	return &MemoryState{Replay: replay, Limiter: limiter,
		families: familyStore{perClient: max(familiesPerClient, 1), clients: map[string]map[string]*Family{}}}
}

// Admit implements State. A replay is refused before the rate limit: it spends nothing.
func (m *MemoryState) Admit(_ context.Context, a Admission) *Error {
	if a.Digest != nil && m.Replay.Seen(a.ClientID, *a.Digest, a.Now) {
		return replayError(a.Code)
	}
	if ok, wait := m.Limiter.Allow(a.ClientID, a.Now); !ok {
		return errRateLimited(a.ClientID, wait)
	}
	if a.Digest != nil {
		if e := m.Replay.Record(a.ClientID, *a.Digest, a.ReplayUntil, a.Now, a.Code); e != nil {
			return e
		}
	}
	if a.Family != nil {
		m.families.add(*a.Family, a.Now)
	}
	return nil
}

// Refresh implements State.
func (m *MemoryState) Refresh(_ context.Context, r Rotation) (Family, *Error) {
	s := &m.families
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.clients[r.ClientID][r.FamilyID]
	switch {
	case f == nil || !r.Now.Before(f.Expires):
		s.drop(r.ClientID, r.FamilyID)
		return Family{}, errRefreshUnknown()
	case f.Current != r.Presented:
		s.drop(r.ClientID, r.FamilyID)
		return Family{}, errRefreshReused()
	case f.UID == r.UID && f.Generation > r.Generation:
		return Family{}, errRefreshLagging()
	case f.UID != r.UID || f.Generation < r.Generation || !slices.Contains(r.Bindings, f.Binding):
		s.drop(r.ClientID, r.FamilyID)
		return Family{}, errRefreshKeyGone(r.ClientID)
	case !narrows(r.Scope, f.Scope):
		return Family{}, errRefreshScope(f.Scope)
	}
	if ok, wait := m.Limiter.Allow(r.ClientID, r.Now); !ok {
		return Family{}, errRateLimited(r.ClientID, wait)
	}
	was := *f
	f.Current = r.Next
	return was, nil
}

// Forget drops a deleted ServiceKey's rate bucket and refresh-token families, so they
// do not grow with every ServiceKey ever seen.
func (m *MemoryState) Forget(clientID string) {
	m.Limiter.Forget(clientID)
	m.families.mu.Lock()
	delete(m.families.clients, clientID)
	m.families.mu.Unlock()
}

// Problem implements State: memory is always there.
func (m *MemoryState) Problem() string { return "" }

// familyStore holds refresh-token families by client, then by family ID.
type familyStore struct {
	mu        sync.Mutex
	perClient int
	clients   map[string]map[string]*Family
}

// add stores f, first dropping the client's expired families and, at the bound, the
// one that ends first.
func (s *familyStore) add(f Family, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fams := s.clients[f.ClientID]
	if fams == nil {
		fams = map[string]*Family{}
		s.clients[f.ClientID] = fams
	}
	var first *Family
	for id, g := range fams {
		if !now.Before(g.Expires) {
			delete(fams, id)
		} else if first == nil || g.Expires.Before(first.Expires) {
			first = g
		}
	}
	if len(fams) >= s.perClient && first != nil {
		delete(fams, first.ID)
	}
	fams[f.ID] = &f
}

// drop forgets one family; the caller holds mu.
func (s *familyStore) drop(clientID, id string) {
	if fams := s.clients[clientID]; fams != nil {
		delete(fams, id)
		if len(fams) == 0 {
			delete(s.clients, clientID)
		}
	}
}
