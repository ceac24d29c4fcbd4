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
	"errors"
	"maps"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// SecretContent is everything the controller owns in a key Secret. Digests says
// what every data entry must be; Data holds the bytes, and is nil when the private
// key or client secret to keep is known by digest only (the cache keeps no private
// key): the Secret is then read live before it is written.
type SecretContent struct {
	Name        string
	Labels      map[string]string
	Annotations map[string]string
	Digests     map[string]string
	Data        map[string][]byte
}

// secretContent builds the Secret for the Active key: the staged key when it has just
// been promoted, else the private key already in the Secret (kept byte for byte).
// clientSecret is the client secret's value, or "" when it is known by its hash only.
func secretContent(o Observed, d Decision, p Config, st v1.ServiceKeyStatus, clientSecret, clientSecretHash string) (*SecretContent, error) {
	k := o.Key
	active := activeKey(st.Keys)
	if active == nil {
		return nil, errors.New("no active key to write into the Secret")
	}
	var pem []byte
	var pemDigest string
	switch {
	case d.secret.keyID != "" && d.secret.keyID == active.KeyID:
		pem, pemDigest = d.secret.pem, d.secret.pemDigest
	case o.Staged != nil && stagedKeyID(o.Staged) == active.KeyID:
		pem, pemDigest = o.Staged.Key.PEM, keyutil.HashClientSecret(string(o.Staged.Key.PEM))
	default:
		return nil, errors.New("the private key of active key " + active.KeyID + " is neither in the Secret nor staged")
	}
	kf := keyutil.KeyFile{
		KeyID:      active.KeyID,
		ClientID:   st.ClientID,
		UserID:     st.Subject,
		Issued:     active.Created.UTC().Format(time.RFC3339),
		TokenURI:   p.TokenURI,
		PrivateKey: string(pem),
	}
	c := &SecretContent{Name: st.SecretName, Labels: map[string]string{}, Annotations: map[string]string{}}
	if t := k.Spec.SecretTemplate; t != nil {
		for name, value := range t.Labels {
			c.Labels[name] = string(value)
		}
		maps.Copy(c.Annotations, t.Annotations)
	}
	c.Labels[v1.LabelServiceKey] = k.Name
	if req, ok := k.Annotations[v1.AnnotationRotate]; ok {
		c.Annotations[AnnotationRotationHandled] = req
	}
	plain := map[string]string{v1.SecretKeyClientID: kf.ClientID, v1.SecretKeyKeyID: kf.KeyID,
		v1.SecretKeyTokenURI: kf.TokenURI, v1.SecretKeySubject: kf.UserID}
	c.Digests = map[string]string{v1.SecretKeyJSON: keyFileDigest(kf), v1.SecretKeyPrivateKey: pemDigest}
	for name, value := range plain {
		c.Digests[name] = keyutil.HashClientSecret(value)
	}
	if clientSecretHash != "" {
		c.Digests[v1.SecretKeyClientSecret] = clientSecretHash
	}
	if pem == nil || (clientSecretHash != "" && clientSecret == "") {
		return c, nil
	}
	keyJSON, err := kf.Marshal()
	if err != nil {
		return nil, err
	}
	c.Data = map[string][]byte{v1.SecretKeyJSON: keyJSON, v1.SecretKeyPrivateKey: pem}
	for name, value := range plain {
		c.Data[name] = []byte(value)
	}
	if clientSecret != "" {
		c.Data[v1.SecretKeyClientSecret] = []byte(clientSecret)
	}
	return c, nil
}

// applyConfiguration is the server-side apply request for the Secret, controlled by
// its ServiceKey so that deleting the ServiceKey deletes the Secret.
func (s *SecretContent) applyConfiguration(owner *v1.ServiceKey) *corev1ac.SecretApplyConfiguration {
	return corev1ac.Secret(s.Name, owner.Namespace).
		WithType(corev1.SecretType(v1.SecretType)).
		WithLabels(s.Labels).
		WithAnnotations(s.Annotations).
		WithOwnerReferences(metav1ac.OwnerReference().
			WithAPIVersion(v1.GroupVersion.String()).
			WithKind("ServiceKey").
			WithName(owner.Name).
			WithUID(owner.UID).
			WithController(true).
			WithBlockOwnerDeletion(true)).
		WithData(s.Data)
}

// matches reports whether the Secret already holds exactly this content under the
// controller's ownership, so that a steady-state reconcile sends no request at all.
func (s *SecretContent) matches(existing *corev1.Secret, owner types.UID) bool {
	if existing == nil || existing.Type != corev1.SecretType(v1.SecretType) {
		return false
	}
	ref := metav1.GetControllerOf(existing)
	if ref == nil || ref.UID != owner || ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
		return false
	}
	return equality.Semantic.DeepEqual(s.Labels, nonNil(existing.Labels)) &&
		equality.Semantic.DeepEqual(s.Annotations, nonNil(existing.Annotations)) &&
		maps.Equal(s.Digests, digestsOf(summarize(existing.Data)))
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// redactedText replaces Secret content found in a message.
const redactedText = "[redacted]"

// encodedRuns are runs long enough to be part of encoded key material or a client
// secret, however a webhook printed its bytes: base64 or base64url (a PEM line is 64
// characters, a client secret 43; hex is a subset of these characters), and decimal
// byte lists (Go's %v of a []byte).
// API server messages about fields contain none; a long hyphenated name may be
// redacted too, which errs on the safe side.
var encodedRuns = []*regexp.Regexp{
	regexp.MustCompile(`[A-Za-z0-9+/_-]{32,}={0,2}`),
	regexp.MustCompile(`(?:\d{1,3}[ ,]+){15,}\d{1,3}`),
}

// maxQuoted bounds what is kept of a refusal message: enough for a policy's reason,
// too little to carry more than the start of an encoded key (the public modulus).
const maxQuoted = 300

// redact removes from an API server message any value of the Secret it refused, raw
// or base64, and any long encoded run (a fragment of one, in base64, hex or decimal
// bytes), and cuts it to maxQuoted bytes, before the message goes into the status, an
// event or a log line. The API server's own messages name fields, not data, but an
// admission webhook or policy may quote whatever it was sent; a private key must
// never be copied out of the Secret that way.
func redact(msg string, data map[string][]byte) string {
	for _, v := range data {
		if len(v) < 8 { // too short to be a secret worth hiding, and would mangle the text
			continue
		}
		msg = strings.ReplaceAll(msg, string(v), redactedText)
		msg = strings.ReplaceAll(msg, base64.StdEncoding.EncodeToString(v), redactedText)
	}
	for _, re := range encodedRuns {
		msg = re.ReplaceAllString(msg, redactedText)
	}
	if strings.Contains(msg, "PRIVATE KEY") {
		return "the message quoted key material and is withheld; see the API server's audit log"
	}
	if len(msg) > maxQuoted {
		msg = strings.ToValidUTF8(msg[:maxQuoted], "") + "..."
	}
	return msg
}
