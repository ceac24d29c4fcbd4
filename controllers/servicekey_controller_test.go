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

package controllers_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/controllers"
)

// secretKey checks the Secret of sk against its status and returns the private key:
// type, label, controller owner reference, key.json and the per-field files.
func secretKey(t *testing.T, sk *v1.ServiceKey) *rsa.PrivateKey {
	t.Helper()
	s, err := getSecret(sk.Namespace, sk.Status.SecretName)
	if err != nil {
		t.Fatalf("get Secret: %v", err)
	}
	if s.Type != v1.SecretType || s.Labels[v1.LabelServiceKey] != sk.Name {
		t.Errorf("Secret type %q label %q", s.Type, s.Labels[v1.LabelServiceKey])
	}
	owner := metav1.GetControllerOf(s)
	if owner == nil || owner.UID != sk.UID || owner.Kind != "ServiceKey" || !*owner.BlockOwnerDeletion {
		t.Errorf("controller owner reference %+v, want ServiceKey %s", owner, sk.UID)
	}
	kf, err := keyutil.ParseKeyFile(s.Data[v1.SecretKeyJSON])
	if err != nil {
		t.Fatalf("key.json: %v", err)
	}
	key, _, err := keyutil.ParsePrivateKey([]byte(kf.PrivateKey))
	if err != nil {
		t.Fatalf("key.json private_key: %v", err)
	}
	active := activeKey(t, sk)
	pub, err := keyutil.ParsePublicKey([]byte(active.PublicKey))
	if err != nil {
		t.Fatalf("status public key: %v", err)
	}
	if !pub.Equal(&key.PublicKey) {
		t.Fatal("the Secret's private key does not match the Active public key in status")
	}
	id, _ := keyutil.KeyID(pub)
	want := map[string]string{
		"key_id": id, "client_id": sk.Namespace + "/" + sk.Name, "user_id": sk.Status.Subject,
		"token_uri": tokenURI, "issued": active.Created.UTC().Format(time.RFC3339),
	}
	got := map[string]string{"key_id": kf.KeyID, "client_id": kf.ClientID, "user_id": kf.UserID, "token_uri": kf.TokenURI, "issued": kf.Issued}
	for field, w := range want {
		if got[field] != w {
			t.Errorf("key.json %s = %q, want %q", field, got[field], w)
		}
	}
	files := map[string]string{v1.SecretKeyKeyID: id, v1.SecretKeyClientID: kf.ClientID, v1.SecretKeyTokenURI: tokenURI,
		v1.SecretKeySubject: kf.UserID, v1.SecretKeyPrivateKey: kf.PrivateKey}
	for file, w := range files {
		if string(s.Data[file]) != w {
			t.Errorf("Secret file %s does not match key.json", file)
		}
	}
	if active.KeyID != id {
		t.Errorf("status keyID %s, want thumbprint %s", active.KeyID, id)
	}
	return key
}

func activeKey(t *testing.T, sk *v1.ServiceKey) v1.PublicKey {
	t.Helper()
	var found []v1.PublicKey
	for _, k := range sk.Status.Keys {
		if k.State == v1.KeyActive {
			found = append(found, k)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one Active key, got %v", keyStates(sk))
	}
	return found[0]
}

func TestIssueAndIdempotence(t *testing.T) {
	sk := create(t, newKey("issue"))
	c := meta.FindStatusCondition(sk.Status.Conditions, v1.ConditionReady)
	if c.Status != metav1.ConditionTrue || c.Reason != v1.ReasonIssued {
		t.Fatalf("Ready %s/%s: %s", c.Status, c.Reason, c.Message)
	}
	if sk.Status.ClientID != ns+"/issue" || sk.Status.Subject != "system:servicekey:"+ns+":issue" || sk.Status.SecretName != "issue" {
		t.Errorf("status identity: %+v", sk.Status)
	}
	if sk.Status.LastRotationTime == nil || sk.Status.NextRotationTime != nil || sk.Status.ObservedGeneration != sk.Generation {
		t.Errorf("status times/generation: %+v", sk.Status)
	}
	secretKey(t, sk)
	if note := findEvent(t, sk, v1.EventKeyIssued); !strings.Contains(note, activeKey(t, sk).KeyID) {
		t.Errorf("KeyIssued note %q does not name the key", note)
	}

	// Reconciling again changes nothing: same resourceVersions of ServiceKey and Secret.
	s, _ := getSecret(ns, "issue")
	for i := 0; i < 3; i++ {
		if _, err := reconciler.Reconcile(context.Background(), reqFor(sk)); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
	}
	again := &v1.ServiceKey{}
	if err := reconciler.APIReader.Get(context.Background(), client.ObjectKeyFromObject(sk), again); err != nil {
		t.Fatal(err)
	}
	s2 := &corev1.Secret{}
	if err := reconciler.APIReader.Get(context.Background(), client.ObjectKeyFromObject(s), s2); err != nil {
		t.Fatal(err)
	}
	if again.ResourceVersion != sk.ResourceVersion || s2.ResourceVersion != s.ResourceVersion {
		t.Errorf("repeated reconciles wrote: ServiceKey %s -> %s, Secret %s -> %s",
			sk.ResourceVersion, again.ResourceVersion, s.ResourceVersion, s2.ResourceVersion)
	}
}

func TestSecretDeletedIsRestoredWithNewKey(t *testing.T) {
	sk := create(t, newKey("restore"))
	old := activeKey(t, sk)
	s, _ := getSecret(ns, "restore")
	if err := k8s.Delete(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	sk = waitReady(t, ns, "restore", v1.ReasonIssued, func(sk *v1.ServiceKey) bool {
		return len(sk.Status.Keys) == 2 && sk.Status.Keys[0].State == v1.KeyActive && sk.Status.Keys[0].KeyID != old.KeyID
	})
	secretKey(t, sk)
	assertRetiring(t, sk, old.KeyID, 24*time.Hour)
	findEvent(t, sk, v1.EventSecretRestored)
}

func TestSecretKeyReplacedIsRekeyed(t *testing.T) {
	sk := create(t, newKey("replaced"))
	old := activeKey(t, sk)
	foreign, _ := rsa.GenerateKey(rand.Reader, 2048)
	foreignPEM, _ := keyutil.EncodePrivateKey(foreign, v1.PKCS1)
	foreignID, _ := keyutil.KeyID(&foreign.PublicKey)
	s, _ := getSecret(ns, "replaced")
	s.Data[v1.SecretKeyPrivateKey] = foreignPEM
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	sk = waitReady(t, ns, "replaced", v1.ReasonIssued, func(sk *v1.ServiceKey) bool {
		return sk.Status.Keys[0].State == v1.KeyActive && sk.Status.Keys[0].KeyID != old.KeyID
	})
	key := secretKey(t, sk)
	if key.Equal(foreign) {
		t.Fatal("the foreign key was kept")
	}
	for _, k := range sk.Status.Keys {
		if k.KeyID == foreignID {
			t.Fatal("the foreign key was published")
		}
	}
	assertRetiring(t, sk, old.KeyID, 24*time.Hour)
	if note := findEvent(t, sk, v1.EventSecretRestored); !strings.Contains(note, "not the published one") {
		t.Errorf("SecretRestored note %q", note)
	}
}

func assertRetiring(t *testing.T, sk *v1.ServiceKey, id string, grace time.Duration) {
	t.Helper()
	for _, k := range sk.Status.Keys {
		if k.KeyID != id {
			continue
		}
		want := sk.Status.LastRotationTime.Add(grace)
		if k.State != v1.KeyRetiring || k.NotAfter == nil || !k.NotAfter.Time.Equal(want) {
			t.Errorf("key %s: state %s notAfter %v, want Retiring until %v", id, k.State, k.NotAfter, want)
		}
		return
	}
	t.Errorf("key %s is not in status: %v", id, keyStates(sk))
}

func TestForeignSecretIsNeverTouched(t *testing.T) {
	foreign := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "db-password", Namespace: ns},
		StringData: map[string]string{"password": "hunter2"},
	}
	if err := k8s.Create(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	before, _ := getSecret(ns, "db-password")
	sk := newKey("conflict")
	sk.Spec.SecretName = "db-password"
	create(t, sk)
	sk = waitReady(t, ns, "conflict", v1.ReasonSecretConflict, func(*v1.ServiceKey) bool { return true })
	if len(sk.Status.Keys) != 0 {
		t.Errorf("keys published despite the conflict: %v", keyStates(sk))
	}
	findEvent(t, sk, v1.EventSecretConflict)
	after, _ := getSecret(ns, "db-password")
	if after.ResourceVersion != before.ResourceVersion || string(after.Data["password"]) != "hunter2" {
		t.Error("the foreign Secret was modified")
	}
	if c := meta.FindStatusCondition(sk.Status.Conditions, v1.ConditionReady); strings.Contains(c.Message, "choose another spec.secretName") {
		t.Errorf("the message suggests changing the immutable secretName: %q", c.Message)
	}
	// The conflict clears by itself once the foreign Secret is gone: no spec edit, no
	// restart, although the deleted Secret is not in the controller's cache.
	if err := k8s.Delete(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	sk = waitReady(t, ns, "conflict", v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })
	waitCondition(t, ns, "conflict", v1.ConditionSynced, v1.ReasonSynced)
	secretKey(t, sk)
}

// TestConflictAfterIssueKeepsReady: the key's own Secret is deleted and a foreign
// one takes its name. The Active key still works, so Ready stays True and Synced
// reports the conflict; deleting the foreign Secret restores the key's Secret.
func TestConflictAfterIssueKeepsReady(t *testing.T) {
	sk := create(t, newKey("conflict-later"))
	id := activeKey(t, sk).KeyID
	// The controller would restore its Secret at once; its writes are refused until
	// the foreign Secret (no ServiceKey label, so not refused) has taken the name.
	lift := refuseKeySecrets(t, "refuse-conflict-later", sk.Name)
	if err := k8s.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: sk.Name, Namespace: ns}}); err != nil {
		t.Fatal(err)
	}
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: sk.Name, Namespace: ns}, StringData: map[string]string{"x": "y"}}
	if err := k8s.Create(context.Background(), foreign); err != nil {
		t.Fatalf("a foreign Secret takes the name: %v", err)
	}
	lift()
	waitCondition(t, ns, sk.Name, v1.ConditionSynced, v1.ReasonSecretConflict)
	sk = get(t, ns, sk.Name)
	if c := meta.FindStatusCondition(sk.Status.Conditions, v1.ConditionReady); c.Status != metav1.ConditionTrue {
		t.Errorf("Ready %s/%s while the Active key still works", c.Status, c.Reason)
	}
	if err := k8s.Delete(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ns, sk.Name, v1.ConditionSynced, v1.ReasonSynced)
	sk = waitReady(t, ns, sk.Name, v1.ReasonIssued, func(sk *v1.ServiceKey) bool { return activeKey(t, sk).KeyID != id })
	secretKey(t, sk)
}

func TestRotationByAnnotation(t *testing.T) {
	sk := newKey("rotate-annotation")
	sk.Annotations = map[string]string{v1.AnnotationRotate: "already-there"}
	sk = create(t, sk)
	if len(sk.Status.Keys) != 1 {
		t.Fatalf("an annotation present at creation rotated: %v", keyStates(sk))
	}
	first := activeKey(t, sk)
	update(t, ns, sk.Name, func(sk *v1.ServiceKey) { sk.Annotations[v1.AnnotationRotate] = "2026-11-22" })
	sk = waitReady(t, ns, sk.Name, v1.ReasonIssued, func(sk *v1.ServiceKey) bool { return len(sk.Status.Keys) == 2 })
	secretKey(t, sk)
	assertRetiring(t, sk, first.KeyID, 24*time.Hour)
	findEvent(t, sk, v1.EventKeyRotated)

	// The same value again is not a new request.
	second := activeKey(t, sk)
	poke(t, ns, sk.Name)
	sk = waitReady(t, ns, sk.Name, v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })
	if activeKey(t, sk).KeyID != second.KeyID {
		t.Error("re-keyed without a new rotation request")
	}
}

func TestRotationByScheduleAndGraceExpiry(t *testing.T) {
	sk := newKey("rotate-schedule")
	sk.Spec.Rotation = v1.RotationSpec{Every: dur(2 * time.Hour), GracePeriod: dur(time.Hour)}
	sk = create(t, sk)
	first := activeKey(t, sk)
	assertNextRotation(t, sk, 2*time.Hour)
	fakeClock.Step(2*time.Hour + 2*time.Hour/50 + time.Second) // past the period and its jitter
	poke(t, ns, sk.Name)
	sk = waitReady(t, ns, sk.Name, v1.ReasonIssued, func(sk *v1.ServiceKey) bool { return len(sk.Status.Keys) == 2 })
	secretKey(t, sk)
	assertRetiring(t, sk, first.KeyID, time.Hour)
	assertNextRotation(t, sk, 2*time.Hour)

	// The grace period ends: the Retiring key leaves the status.
	fakeClock.Step(time.Hour + time.Second)
	poke(t, ns, sk.Name)
	sk = waitReady(t, ns, sk.Name, v1.ReasonIssued, func(sk *v1.ServiceKey) bool { return len(sk.Status.Keys) == 1 })
	if activeKey(t, sk).KeyID == first.KeyID {
		t.Error("the retired key is still Active")
	}
	if note := findEvent(t, sk, v1.EventKeyRetired); !strings.Contains(note, first.KeyID) {
		t.Errorf("KeyRetired note %q does not name %s", note, first.KeyID)
	}
}

// assertNextRotation checks nextRotationTime is lastRotationTime + every, plus a
// jitter below 2% of every.
func assertNextRotation(t *testing.T, sk *v1.ServiceKey, every time.Duration) {
	t.Helper()
	next, last := sk.Status.NextRotationTime, sk.Status.LastRotationTime
	if next == nil || last == nil || next.Before(&metav1.Time{Time: last.Add(every)}) || !next.Before(&metav1.Time{Time: last.Add(every + every/50)}) {
		t.Errorf("nextRotationTime %v, want within 2%% after %v + %v", next, last, every)
	}
}

func TestKeySizesAndEncodings(t *testing.T) {
	cases := map[string]struct {
		size      int32
		encoding  v1.PrivateKeyEncoding
		pemHeader string
	}{
		"2048 PKCS1": {2048, v1.PKCS1, "-----BEGIN RSA PRIVATE KEY-----"},
		"3072 PKCS8": {3072, v1.PKCS8, "-----BEGIN PRIVATE KEY-----"},
		"4096 PKCS1": {4096, v1.PKCS1, "-----BEGIN RSA PRIVATE KEY-----"},
		"2048 PKCS8": {2048, v1.PKCS8, "-----BEGIN PRIVATE KEY-----"},
	}
	i := 0
	for name, tc := range cases {
		i++
		t.Run(name, func(t *testing.T) {
			sk := newKey(fmt.Sprintf("size-%d", i))
			sk.Spec.PrivateKey = v1.PrivateKeySpec{Size: tc.size, Encoding: tc.encoding}
			sk = create(t, sk)
			key := secretKey(t, sk)
			s, _ := getSecret(ns, sk.Name)
			if key.N.BitLen() != int(tc.size) || !strings.HasPrefix(string(s.Data[v1.SecretKeyPrivateKey]), tc.pemHeader) {
				t.Errorf("key of %d bits, PEM %q", key.N.BitLen(), strings.SplitN(string(s.Data[v1.SecretKeyPrivateKey]), "\n", 2)[0])
			}
		})
	}
}

func TestPrivateKeySpecChangeRekeys(t *testing.T) {
	sk := create(t, newKey("respec"))
	first := activeKey(t, sk)
	update(t, ns, sk.Name, func(sk *v1.ServiceKey) { sk.Spec.PrivateKey.Encoding = v1.PKCS8 })
	sk = waitReady(t, ns, sk.Name, v1.ReasonIssued, func(sk *v1.ServiceKey) bool { return len(sk.Status.Keys) == 2 })
	secretKey(t, sk)
	assertRetiring(t, sk, first.KeyID, 24*time.Hour)
	s, _ := getSecret(ns, sk.Name)
	if !strings.HasPrefix(string(s.Data[v1.SecretKeyPrivateKey]), "-----BEGIN PRIVATE KEY-----") {
		t.Error("the new key is not PKCS #8")
	}
}

func TestSecretTemplateWithoutRekey(t *testing.T) {
	sk := create(t, newKey("template"))
	id := activeKey(t, sk).KeyID
	update(t, ns, sk.Name, func(sk *v1.ServiceKey) {
		sk.Spec.SecretTemplate = &v1.SecretTemplate{
			Labels:      map[string]v1.LabelValue{"team": "payments", "tier": "gold"},
			Annotations: map[string]string{"backup.example.com/exclude": "true"},
		}
	})
	eventually(t, "template applied", func() (bool, string) {
		s, err := getSecret(ns, "template")
		return err == nil && s.Labels["team"] == "payments" && s.Labels["tier"] == "gold" &&
			s.Annotations["backup.example.com/exclude"] == "true", fmt.Sprint(s.Labels, s.Annotations)
	})
	update(t, ns, sk.Name, func(sk *v1.ServiceKey) { delete(sk.Spec.SecretTemplate.Labels, "tier") })
	eventually(t, "label removed", func() (bool, string) {
		s, err := getSecret(ns, "template")
		_, has := s.Labels["tier"]
		return err == nil && !has && s.Labels[v1.LabelServiceKey] == "template", fmt.Sprint(s.Labels)
	})
	sk = waitReady(t, ns, sk.Name, v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })
	if len(sk.Status.Keys) != 1 || activeKey(t, sk).KeyID != id {
		t.Errorf("template change re-keyed: %v", keyStates(sk))
	}
	secretKey(t, sk)
}

// TestInvalidTemplateLabelIsReported: a label key CEL lets through but the API server
// refuses on the Secret leaves the working key working (Ready True) and is reported
// on Synced, then clears when the template is fixed.
func TestInvalidTemplateLabelIsReported(t *testing.T) {
	sk := create(t, newKey("bad-label"))
	id := activeKey(t, sk).KeyID
	update(t, ns, sk.Name, func(sk *v1.ServiceKey) {
		sk.Spec.SecretTemplate = &v1.SecretTemplate{Labels: map[string]v1.LabelValue{"not a valid key!": "x"}}
	})
	c := waitCondition(t, ns, sk.Name, v1.ConditionSynced, v1.ReasonInvalidSpec)
	sk = waitReady(t, ns, sk.Name, v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })
	if !strings.Contains(c.Message, "metadata.labels") || activeKey(t, sk).KeyID != id {
		t.Errorf("InvalidSpec message %q, keys %v", c.Message, keyStates(sk))
	}
	findEvent(t, sk, v1.EventSecretWriteFailed)
	update(t, ns, sk.Name, func(sk *v1.ServiceKey) { sk.Spec.SecretTemplate = nil })
	sk = waitReady(t, ns, sk.Name, v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })
	if activeKey(t, sk).KeyID != id {
		t.Error("recovering from InvalidSpec re-keyed")
	}
}

func TestExpiryRoundTrip(t *testing.T) {
	sk := newKey("expiry")
	at := metav1.NewTime(fakeClock.Now().Add(time.Hour))
	sk.Spec.ExpiresAt = &at
	sk = create(t, sk)
	id := activeKey(t, sk).KeyID
	if na := activeKey(t, sk).NotAfter; na == nil || !na.Time.Equal(at.Time) {
		t.Errorf("Active notAfter %v, want expiresAt %v", na, at)
	}
	fakeClock.Step(time.Hour + time.Second)
	poke(t, ns, sk.Name)
	sk = waitReady(t, ns, sk.Name, v1.ReasonExpired, func(*v1.ServiceKey) bool { return true })
	if c := meta.FindStatusCondition(sk.Status.Conditions, v1.ConditionReady); c.Status != metav1.ConditionFalse {
		t.Errorf("Ready is %s while expired", c.Status)
	}
	later := metav1.NewTime(fakeClock.Now().Add(24 * time.Hour))
	update(t, ns, sk.Name, func(sk *v1.ServiceKey) { sk.Spec.ExpiresAt = &later })
	sk = waitReady(t, ns, sk.Name, v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })
	if activeKey(t, sk).KeyID != id {
		t.Error("extending the expiry re-keyed")
	}
}

func TestSuspensionRoundTrip(t *testing.T) {
	sk := create(t, newKey("suspend"))
	id := activeKey(t, sk).KeyID
	update(t, ns, sk.Name, func(sk *v1.ServiceKey) { sk.Spec.Suspended = true })
	sk = waitReady(t, ns, sk.Name, v1.ReasonSuspended, func(*v1.ServiceKey) bool { return true })
	update(t, ns, sk.Name, func(sk *v1.ServiceKey) { sk.Spec.Suspended = false })
	sk = waitReady(t, ns, sk.Name, v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })
	if activeKey(t, sk).KeyID != id {
		t.Error("suspension round trip re-keyed")
	}
	secretKey(t, sk)
}

func TestMetrics(t *testing.T) {
	sk := newKey("metric")
	sk.Spec.Rotation.Every = dur(720 * time.Hour)
	sk.Spec.Validity = dur(8760 * time.Hour) // so the expiry gauge has a value of this test's own
	create(t, sk)
	if n := testutil.ToFloat64(metrics.Rotations.WithLabelValues(string(controllers.CauseInitial))); n < 1 {
		t.Errorf("servicekey_rotations_total{cause=Initial} = %v, want at least 1", n)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := metrics.Register(reg); err != nil {
		t.Fatal(err)
	}
	var list v1.ServiceKeyList
	if err := k8s.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	active, pending, retiring := 0, 0, 0
	for _, item := range list.Items {
		if item.Namespace == raceNS { // not in the manager's cache
			continue
		}
		for _, k := range item.Status.Keys {
			switch k.State {
			case v1.KeyActive:
				active++
			case v1.KeyRetiring:
				retiring++
			default:
				pending++
			}
		}
	}
	want := fmt.Sprintf(`
# HELP servicekey_keys Published public keys by state (Pending, Active, Retiring).
# TYPE servicekey_keys gauge
servicekey_keys{state="Active"} %d
servicekey_keys{state="Pending"} %d
servicekey_keys{state="Retiring"} %d
`, active, pending, retiring)
	eventually(t, "key gauges to match the cluster", func() (bool, string) {
		err := testutil.GatherAndCompare(reg, strings.NewReader(want), "servicekey_keys")
		return err == nil, fmt.Sprint(err)
	})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
	}
	for _, n := range []string{"servicekey_next_rotation_timestamp_seconds", "servicekey_next_expiry_timestamp_seconds",
		"servicekey_expiration_timestamp_seconds", "servicekey_ready_status", "servicekey_synced_status"} {
		if !names[n] {
			t.Errorf("metric %s missing; have %v", n, names)
		}
	}
}

func reqFor(sk *v1.ServiceKey) ctrl.Request {
	return ctrl.Request{NamespacedName: client.ObjectKeyFromObject(sk)}
}

func TestClientSecretOptIn(t *testing.T) {
	kept := newKey("with-secret-kept") // stays, so the leak check looks for its secret
	kept.Spec.ClientSecret = &v1.ClientSecretSpec{Enabled: true}
	waitReady(t, ns, create(t, kept).Name, v1.ReasonIssued, func(sk *v1.ServiceKey) bool { return sk.Status.ClientSecretHash != "" })
	sk := newKey("with-secret")
	sk.Spec.ClientSecret = &v1.ClientSecretSpec{Enabled: true}
	sk = waitReady(t, ns, create(t, sk).Name, v1.ReasonIssued, func(sk *v1.ServiceKey) bool { return sk.Status.ClientSecretHash != "" })
	s, _ := getSecret(ns, sk.Name)
	secret := string(s.Data[v1.SecretKeyClientSecret])
	if len(secret) < 40 || !keyutil.ClientSecretMatches(secret, sk.Status.ClientSecretHash) {
		t.Fatalf("client secret of %d chars does not match the status hash", len(secret))
	}
	// A key rotation keeps the client secret.
	update(t, ns, sk.Name, func(sk *v1.ServiceKey) { sk.Annotations = map[string]string{v1.AnnotationRotate: "1"} })
	sk = waitReady(t, ns, sk.Name, v1.ReasonIssued, func(sk *v1.ServiceKey) bool { return len(sk.Status.Keys) == 2 })
	if s, _ := getSecret(ns, sk.Name); string(s.Data[v1.SecretKeyClientSecret]) != secret {
		t.Error("a key rotation changed the client secret")
	}
	// Opting out removes it.
	update(t, ns, sk.Name, func(sk *v1.ServiceKey) { sk.Spec.ClientSecret = nil })
	waitReady(t, ns, sk.Name, v1.ReasonIssued, func(sk *v1.ServiceKey) bool { return sk.Status.ClientSecretHash == "" })
	eventually(t, "client-secret removed from the Secret", func() (bool, string) {
		s, err := getSecret(ns, sk.Name)
		_, has := s.Data[v1.SecretKeyClientSecret]
		return err == nil && !has, ""
	})
}
