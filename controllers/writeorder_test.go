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
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// published stores st as the ServiceKey's status, as the API server would.
func (f *fixture) published(st v1.ServiceKeyStatus) { f.key = f.key.DeepCopy(); f.key.Status = st }

func keyIDOf(t *testing.T, nk *NewKey) string {
	t.Helper()
	id, err := keyutil.KeyID(&nk.Key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestWriteOrderAtEveryStop stops the protocol after each of its writes, loses the
// controller's memory, and checks what the next reconcile decides: never a key in
// the Secret that the status does not publish, never a second Active key, never a
// retired key that somebody holds.
func TestWriteOrderAtEveryStop(t *testing.T) {
	f := newFixture(t)
	oldID := activeKey(f.key.Status.Keys).KeyID
	f.key.Annotations = map[string]string{v1.AnnotationRotate: "1"}
	nk := newKey(t)
	d := Decide(f.at(t0))
	st, _, err := Publish(f.at(t0), d, nk)
	if err != nil {
		t.Fatal(err)
	}
	f.published(st)

	t.Run("stopped after publishing: the Pending key retires with grace, a new one is published", func(t *testing.T) {
		o := f.at(t0.Add(time.Second)) // no Staged: memory lost
		d := Decide(o)
		if !d.RetirePending || d.Rekey != CauseRequested {
			t.Fatalf("decision %+v, want RetirePending and Requested", d)
		}
		again := newKey(t)
		st, _, err := Publish(o, d, again)
		if err != nil {
			t.Fatal(err)
		}
		if p := pendingKey(st.Keys); p == nil || p.KeyID != keyIDOf(t, again) || len(st.Keys) != 3 {
			t.Errorf("keys after republishing: %+v", st.Keys)
		}
		if old := keyWithID(st.Keys, keyIDOf(t, nk)); old == nil || old.State != v1.KeyRetiring || old.NotAfter == nil {
			t.Errorf("the unheld Pending key was not retired with a grace period: %+v", old)
		}
		if a := activeKey(st.Keys); a == nil || a.KeyID != oldID {
			t.Errorf("the Active key changed before the Secret did: %+v", a)
		}
	})

	t.Run("stopped after the Secret write: the Pending key is promoted", func(t *testing.T) {
		g := f
		g.secret = f.secret.DeepCopy()
		g.secret.Data[v1.SecretKeyPrivateKey] = nk.PEM
		o := g.at(t0.Add(time.Second))
		d := Decide(o)
		if !d.Promote || d.PromoteCause != CauseResumed || d.Generate() {
			t.Fatalf("decision %+v, want Promote (Resumed) and nothing new", d)
		}
		out, err := Build(o, d, Config{})
		if err != nil {
			t.Fatal(err)
		}
		if a := activeKey(out.Status.Keys); a == nil || a.KeyID != keyIDOf(t, nk) {
			t.Errorf("Active after promotion: %+v", a)
		}
		if old := keyIn(out.Status.Keys, v1.KeyRetiring); old == nil || old.KeyID != oldID || old.Superseded == nil {
			t.Errorf("previous key not Retiring: %+v", out.Status.Keys)
		}
	})

	t.Run("Secret refused: the Active key keeps working, Synced says why", func(t *testing.T) {
		o := f.at(t0)
		o.Staged = &Staged{UID: f.key.UID, Key: *nk, Cause: CauseRequested}
		out, err := SecretRefused(o, Decide(o), Config{}, v1.ReasonReconcileError, "refused")
		if err != nil {
			t.Fatal(err)
		}
		st := out.Status
		if out.Secret != nil {
			t.Error("a refused Secret is written again in the same reconcile")
		}
		if c := meta.FindStatusCondition(st.Conditions, v1.ConditionReady); c.Status != metav1.ConditionTrue {
			t.Errorf("Ready %s/%s, want True", c.Status, c.Reason)
		}
		if c := meta.FindStatusCondition(st.Conditions, v1.ConditionSynced); c.Status != metav1.ConditionFalse || c.Reason != v1.ReasonReconcileError {
			t.Errorf("Synced %+v", c)
		}
		if pendingKey(st.Keys) == nil {
			t.Error("the Pending key was dropped while its private half is staged")
		}
	})
}

func TestFirstKeyRefusedSecretIsPending(t *testing.T) {
	f := newFixture(t)
	f.key.Status = v1.ServiceKeyStatus{}
	f.secret = nil
	nk := newKey(t)
	o := f.at(t0)
	st, _, err := Publish(o, Decide(o), nk)
	if err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(st.Conditions, v1.ConditionReady); c == nil || c.Reason != v1.ReasonPending {
		t.Errorf("Ready after publishing the first key: %+v", c)
	}
	f.published(st)
	o = f.at(t0)
	o.Staged = &Staged{UID: f.key.UID, Key: *nk, Cause: CauseInitial}
	out, err := SecretRefused(o, Decide(o), Config{}, v1.ReasonInvalidSpec, "bad label")
	if err != nil {
		t.Fatal(err)
	}
	refused := out.Status
	if c := meta.FindStatusCondition(refused.Conditions, v1.ConditionReady); c.Status != metav1.ConditionFalse || c.Reason != v1.ReasonPending {
		t.Errorf("Ready %+v, want False/Pending", c)
	}
}

// TestLoweredGraceEndsRetiringKeys is the leaked-key runbook in pure form: rotate,
// then lower gracePeriod; the Retiring key is gone at the next reconcile, also when
// the API server refuses the Secret (a status-only change must not wait for it).
func TestLoweredGraceEndsRetiringKeys(t *testing.T) {
	cases := map[string]struct {
		grace         time.Duration
		secretRefused bool
		wantRetired   bool
		wantEnd       time.Time
	}{
		"default grace kept":                             {grace: 24 * time.Hour, wantEnd: t0.Add(24 * time.Hour)},
		"lowered to 1s: retired at once":                 {grace: time.Second, wantRetired: true},
		"lowered to 1s, Secret refused: retired at once": {grace: time.Second, secretRefused: true, wantRetired: true},
		"lowered to 1h: ends an hour after the rotation": {grace: time.Hour, wantEnd: t0.Add(time.Hour)},
		"raised: never extended":                         {grace: 48 * time.Hour, wantEnd: t0.Add(24 * time.Hour)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			f.key.Annotations = map[string]string{v1.AnnotationRotate: "leak"}
			d := f.issue(t, f.at(t0), newKey(t))
			f.published(d.Status)
			f.secret.Data, f.secret.Annotations = d.Secret.Data, d.Secret.Annotations
			f.key.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: tc.grace}
			o := f.at(t0.Add(2 * time.Second))
			out, err := Build(o, Decide(o), Config{})
			if tc.secretRefused {
				out, err = SecretRefused(o, Decide(o), Config{}, v1.ReasonReconcileError, "refused")
			}
			if err != nil {
				t.Fatal(err)
			}
			r := keyIn(out.Status.Keys, v1.KeyRetiring)
			switch {
			case tc.wantRetired && (r != nil || len(out.Retired) != 1):
				t.Errorf("Retiring key still published: %+v", out.Status.Keys)
			case !tc.wantRetired && (r == nil || !r.NotAfter.Time.Equal(tc.wantEnd)):
				t.Errorf("Retiring key %+v, want notAfter %s", r, tc.wantEnd)
			}
		})
	}
}

func TestClientSecretPublishedBeforeWritten(t *testing.T) {
	f := newFixture(t)
	f.key.Spec.ClientSecret = &v1.ClientSecretSpec{Enabled: true}
	o := f.at(t0)
	d := Decide(o)
	if !d.NewClientSecret || d.Rekey != "" {
		t.Fatalf("decision %+v", d)
	}
	st, _, err := Publish(o, d, &NewKey{ClientSecret: "s3cret-value"})
	if err != nil {
		t.Fatal(err)
	}
	f.published(st)
	o = f.at(t0)
	o.Staged = &Staged{UID: f.key.UID, Key: NewKey{ClientSecret: "s3cret-value"}}
	d = Decide(o)
	if d.Generate() {
		t.Fatalf("staged client secret not reused: %+v", d)
	}
	out, err := Build(o, d, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(out.Secret.Data[v1.SecretKeyClientSecret]); got != "s3cret-value" {
		t.Errorf("Secret holds client secret %q, want the staged one", got)
	}
}

// TestRotationJitterSpreads: a hundred keys created in the same second with
// rotation.every 720h rotate over more than a hundred distinct seconds... at least
// ninety, within 2% of the period.
func TestRotationJitterSpreads(t *testing.T) {
	seen := map[int64]bool{}
	span := 720 * time.Hour / 50
	for i := range 100 {
		j := rotationJitter(types.UID(fmt.Sprintf("uid-%d", i)), span)
		if j < 0 || j >= span {
			t.Fatalf("jitter %v outside [0, %v)", j, span)
		}
		seen[int64(j/time.Second)] = true
	}
	if len(seen) < 90 {
		t.Errorf("100 keys rotate in only %d distinct seconds", len(seen))
	}
}

// TestRedactQuotedSecret: an admission webhook that quotes the refused Secret must
// not get the private key copied into the status or an event.
func TestRedactQuotedSecret(t *testing.T) {
	pem := []byte("-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----\n")
	secret := []byte("client-secret-value-0123456789")
	data := map[string][]byte{v1.SecretKeyPrivateKey: pem, v1.SecretKeyClientSecret: secret, v1.SecretKeyKeyID: []byte("kid")}
	real, err := (RSAKeys{}).New(2048, v1.PKCS1) // a key the exact-match rule does not know
	if err != nil {
		t.Fatal(err)
	}
	body := real.PEM[40:100]
	cases := map[string]struct{ in, want string }{
		"field message kept":       {in: `metadata.labels: Invalid value: "bad key!"`, want: `metadata.labels: Invalid value: "bad key!"`},
		"raw client secret":        {in: "denied: client-secret=" + string(secret), want: "denied: client-secret=" + redactedText},
		"base64 client secret":     {in: "data.client-secret: " + base64.StdEncoding.EncodeToString(secret), want: "data.client-secret: " + redactedText},
		"raw PEM":                  {in: "denied " + string(pem), want: "denied " + redactedText},
		"other key material left":  {in: "saw -----BEGIN PRIVATE KEY----- x", want: "the message quoted key material and is withheld; see the API server's audit log"},
		"fragment of base64":       {in: "data.key.json: ...ZXlKaGJHY2lPaUpTVXpJMU5pSXNJblI1Y0NJNklrcFhWQ0o5LmV5Sn...", want: "data.key.json: ..." + redactedText + "..."},
		"bytes printed in decimal": {in: "denied: " + fmt.Sprint(map[string][]byte{"k": body}), want: "denied: map[k:[" + redactedText + "]]"},
		"bytes printed in hex":     {in: fmt.Sprintf("denied: %x", body), want: "denied: " + redactedText},
		"part of a client secret":  {in: "denied: cs=Xq3_v-9aZk2Lw8_-pQ4nR7sT1uV6yB0cD5e", want: "denied: cs=" + redactedText},
		"long message cut":         {in: strings.Repeat("policy says no. ", 30), want: strings.Repeat("policy says no. ", 30)[:maxQuoted] + "..."},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := redact(tc.in, data); got != tc.want {
				t.Errorf("redact(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// heldRetiring is n Retiring keys pods were given ("held-<i>"), created step apart
// before t0, until notAfter.
func heldRetiring(n int, step time.Duration, notAfter metav1.Time) []v1.PublicKey {
	var keys []v1.PublicKey
	for i := range n {
		created := metav1.NewTime(t0.Add(-time.Duration(i+2) * step))
		superseded := metav1.NewTime(created.Add(time.Minute))
		keys = append(keys, v1.PublicKey{KeyID: fmt.Sprint("held-", i), Created: created,
			Superseded: &superseded, NotAfter: &notAfter, State: v1.KeyRetiring})
	}
	return keys
}

// TestNeverActiveKeysLeaveFirst: a controller crashing between publishing and writing
// the Secret leaves Pending keys nobody holds; retired, they must not push out of a
// full list a Retiring key that pods were given.
func TestNeverActiveKeysLeaveFirst(t *testing.T) {
	f := newFixture(t)
	until := metav1.NewTime(t0.Add(time.Hour))
	f.key.Status.Keys = append(f.key.Status.Keys, heldRetiring(maxKeys-1, time.Minute, until)...)
	f.key.Status.Keys = append(f.key.Status.Keys, v1.PublicKey{KeyID: "never-held", Created: metav1.NewTime(t0), State: v1.KeyPending})
	o := f.at(t0.Add(time.Second))
	d := Decide(o)
	if !d.RetirePending {
		t.Fatalf("decision %+v, want RetirePending", d)
	}
	out, err := Build(o, d, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Retired) != 1 || out.Retired[0] != "never-held" || len(out.Status.Keys) != maxKeys {
		t.Errorf("retired %v, %d keys left; want only the never-held key gone and %d kept", out.Retired, len(out.Status.Keys), maxKeys)
	}
}

// TestPublishKeepsTheListWithinTheLimit: a full list (Active, 15 Retiring, and a
// Pending key nobody holds) gets a new Pending key while the old one retires; the
// status must stay within the CRD's limit, or the API server refuses it for good
// (found by TestControllerKilledDuringRotations: "status.keys: Too many: 18").
func TestPublishKeepsTheListWithinTheLimit(t *testing.T) {
	f := newFixture(t)
	until := metav1.NewTime(t0.Add(time.Hour))
	f.key.Status.Keys = f.key.Status.Keys[:1] // the fixture's issued, Active key
	activeID := f.key.Status.Keys[0].KeyID
	f.key.Status.Keys = append(f.key.Status.Keys, heldRetiring(maxKeys-1, time.Hour, until)...)
	f.key.Status.Keys = append(f.key.Status.Keys, v1.PublicKey{KeyID: "never-held", Created: metav1.NewTime(t0), State: v1.KeyPending})
	nk, err := (RSAKeys{}).New(2048, v1.PKCS1)
	if err != nil {
		t.Fatal(err)
	}
	st, events, err := Publish(f.at(t0.Add(time.Second)), Decision{RetirePending: true, Rekey: CauseRequested}, nk)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Keys) > maxKeys+1 || keyWithID(st.Keys, "never-held") != nil || keyWithID(st.Keys, activeID) == nil {
		t.Errorf("%d keys (limit %d), never-held kept %v, active kept %v", len(st.Keys), maxKeys+1,
			keyWithID(st.Keys, "never-held") != nil, keyWithID(st.Keys, activeID) != nil)
	}
	if len(events) != 1 || events[0].Reason != v1.EventKeyRetired {
		t.Errorf("events %+v, want one KeyRetired for the key that made room", events)
	}
}
