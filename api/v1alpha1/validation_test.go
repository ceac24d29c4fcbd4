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

package v1alpha1_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

var k8s client.Client

func TestMain(m *testing.M) {
	env, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	k8s = env.Client
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

// newKey is a minimal valid ServiceKey in the default namespace.
func newKey(name string) *v1.ServiceKey {
	return &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
}

// TestValidationRejects proves that the API server itself refuses bad ServiceKeys at
// apply time, naming the field and saying what is wrong.
func TestValidationRejects(t *testing.T) {
	cases := map[string]struct {
		spec    func(*v1.ServiceKeySpec)
		update  func(*v1.ServiceKeySpec) // when set: spec creates, update must be refused
		field   string
		message string
	}{
		"key size 1024": {
			spec:  func(s *v1.ServiceKeySpec) { s.PrivateKey.Size = 1024 },
			field: "spec.privateKey.size", message: `supported values: "2048", "3072", "4096"`,
		},
		"key encoding DER": {
			spec:  func(s *v1.ServiceKeySpec) { s.PrivateKey.Encoding = "DER" },
			field: "spec.privateKey.encoding", message: `supported values: "PKCS1", "PKCS8"`,
		},
		"CIDR with prefix 33": {
			spec:  func(s *v1.ServiceKeySpec) { s.AllowedCIDRs = []string{"10.0.0.0/8", "10.0.0.0/33"} },
			field: "spec.allowedCIDRs", message: "each allowedCIDRs entry must be a CIDR",
		},
		"CIDR that is a bare address": {
			spec:  func(s *v1.ServiceKeySpec) { s.AllowedCIDRs = []string{"192.168.1.1"} },
			field: "spec.allowedCIDRs", message: "each allowedCIDRs entry must be a CIDR",
		},
		"scope with a space": {
			spec:  func(s *v1.ServiceKeySpec) { s.Scopes = []string{"read", "write all"} },
			field: "spec.scopes", message: "each scope must be a non-empty RFC 6749 scope-token",
		},
		"scope with a quote": {
			spec:  func(s *v1.ServiceKeySpec) { s.Scopes = []string{`say"hi"`} },
			field: "spec.scopes", message: "each scope must be a non-empty RFC 6749 scope-token",
		},
		"empty scope": {
			spec:  func(s *v1.ServiceKeySpec) { s.Scopes = []string{""} },
			field: "spec.scopes[0]", message: "at least 1 chars long",
		},
		"duplicate scope": {
			spec:  func(s *v1.ServiceKeySpec) { s.Scopes = []string{"read", "read"} },
			field: "spec.scopes[1]", message: "Duplicate value",
		},
		"secretName not DNS-1123": {
			spec:  func(s *v1.ServiceKeySpec) { s.SecretName = "My_Secret" },
			field: "spec.secretName", message: "secretName must be a DNS-1123 subdomain",
		},
		"secretName changed": {
			spec:   func(s *v1.ServiceKeySpec) { s.SecretName = "first" },
			update: func(s *v1.ServiceKeySpec) { s.SecretName = "second" },
			field:  "spec.secretName", message: "secretName is immutable",
		},
		"secretName added after creation": {
			spec:   func(s *v1.ServiceKeySpec) {},
			update: func(s *v1.ServiceKeySpec) { s.SecretName = "later" },
			field:  "spec.secretName", message: "secretName is immutable",
		},
		"expiresAt and validity both set": {
			spec: func(s *v1.ServiceKeySpec) {
				s.Validity = dur(time.Hour)
				s.ExpiresAt = &metav1.Time{Time: time.Now().Add(time.Hour)}
			},
			field: "spec.expiresAt", message: "set either validity or expiresAt, not both",
		},
		"gracePeriod not shorter than every": {
			spec: func(s *v1.ServiceKeySpec) {
				s.Rotation = v1.RotationSpec{Every: dur(2 * time.Hour), GracePeriod: dur(2 * time.Hour)}
			},
			field: "spec.rotation.gracePeriod", message: "gracePeriod (default 24h) must be shorter than every",
		},
		"default gracePeriod with short every": {
			spec:  func(s *v1.ServiceKeySpec) { s.Rotation = v1.RotationSpec{Every: dur(12 * time.Hour)} },
			field: "spec.rotation.gracePeriod", message: "gracePeriod (default 24h) must be shorter than every",
		},
		"negative rotation interval": {
			spec:  func(s *v1.ServiceKeySpec) { s.Rotation.Every = dur(-time.Hour) },
			field: "spec.rotation.every", message: "every must be a duration such as 720h, between 1h and 87600h",
		},
		"rotation every ten seconds": {
			spec:  func(s *v1.ServiceKeySpec) { s.Rotation.Every = dur(10 * time.Second) },
			field: "spec.rotation.every", message: "every must be a duration such as 720h, between 1h and 87600h",
		},
		"zero grace period": {
			spec:  func(s *v1.ServiceKeySpec) { s.Rotation.GracePeriod = dur(0) },
			field: "spec.rotation.gracePeriod", message: "gracePeriod must be a duration such as 24h, between 1s and 8760h",
		},
		"access token TTL over 24h": {
			spec:  func(s *v1.ServiceKeySpec) { s.AccessTokenTTL = dur(48 * time.Hour) },
			field: "spec.accessTokenTTL", message: "accessTokenTTL must be a duration such as 1h, between 1m and 24h",
		},
		"access token TTL zero": {
			spec:  func(s *v1.ServiceKeySpec) { s.AccessTokenTTL = dur(0) },
			field: "spec.accessTokenTTL", message: "accessTokenTTL must be a duration such as 1h, between 1m and 24h",
		},
		"refresh token TTL over a year": {
			spec: func(s *v1.ServiceKeySpec) {
				s.RefreshTokens = &v1.RefreshTokensSpec{TTL: metav1.Duration{Duration: 9000 * time.Hour}}
			},
			field: "spec.refreshTokens.ttl", message: "refreshTokens.ttl must be a duration such as 720h, between 5m and 8760h (1 year)",
		},
		"refresh token TTL zero": {
			spec:  func(s *v1.ServiceKeySpec) { s.RefreshTokens = &v1.RefreshTokensSpec{} },
			field: "spec.refreshTokens.ttl", message: "refreshTokens.ttl must be a duration such as 720h, between 5m and 8760h (1 year)",
		},
		"validity negative": {
			spec:  func(s *v1.ServiceKeySpec) { s.Validity = dur(-time.Minute) },
			field: "spec.validity", message: "validity must be a duration such as 720h, between 1m and 87600h",
		},
		"subject with white space": {
			spec:  func(s *v1.ServiceKeySpec) { s.Subject = "system:servicekey:default: x" },
			field: "spec.subject", message: "subject must not contain white space",
		},
		"secretTemplate label in the reserved prefix": {
			spec: func(s *v1.ServiceKeySpec) {
				s.SecretTemplate = &v1.SecretTemplate{Labels: map[string]v1.LabelValue{v1.LabelServiceKey: "other"}}
			},
			field: "spec.secretTemplate.labels", message: "labels under auth.servicekey.dev/ are reserved",
		},
		"secretTemplate label value with spaces": {
			spec: func(s *v1.ServiceKeySpec) {
				s.SecretTemplate = &v1.SecretTemplate{Labels: map[string]v1.LabelValue{"team": "not a valid label value!"}}
			},
			field: "spec.secretTemplate.labels[team]", message: "a label value must be empty or up to 63 letters",
		},
		"secretTemplate label value ending in a dash": {
			spec: func(s *v1.ServiceKeySpec) {
				s.SecretTemplate = &v1.SecretTemplate{Labels: map[string]v1.LabelValue{"team": "payments-"}}
			},
			field: "spec.secretTemplate.labels[team]", message: "a label value must be empty or up to 63 letters",
		},
		"secretTemplate label value of 64 characters": {
			spec: func(s *v1.ServiceKeySpec) {
				s.SecretTemplate = &v1.SecretTemplate{Labels: map[string]v1.LabelValue{"team": v1.LabelValue(strings.Repeat("a", 64))}}
			},
			field: "spec.secretTemplate.labels.team", message: "may not be more than 63 bytes",
		},
		"audience with a space": {
			spec:  func(s *v1.ServiceKeySpec) { s.Audiences = []string{"https://api.example.com x"} },
			field: "spec.audiences", message: "audiences must not contain white space",
		},
	}
	n := 0
	for name, tc := range cases {
		n++
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			sk := newKey(fmt.Sprintf("invalid-%d", n))
			tc.spec(&sk.Spec)
			err := k8s.Create(ctx, sk)
			if tc.update != nil {
				if err != nil {
					t.Fatalf("create before update: %v", err)
				}
				tc.update(&sk.Spec)
				err = k8s.Update(ctx, sk)
			}
			assertInvalid(t, err, tc.field, tc.message)
		})
	}
}

// TestNameBecomesLabelValue: the name is the value of the label on the Secret, so
// a name the label cannot hold is refused at apply time; 63 characters are fine.
func TestNameBecomesLabelValue(t *testing.T) {
	ctx := context.Background()
	err := k8s.Create(ctx, newKey(strings.Repeat("n", 64)))
	if err == nil || !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "the name of a ServiceKey must be at most 63 characters") {
		t.Errorf("64-character name: %v, want the CEL message", err)
	}
	ok := newKey(strings.Repeat("n", 63))
	if err := k8s.Create(ctx, ok); err != nil {
		t.Errorf("63-character name refused: %v", err)
	}
	_ = k8s.Delete(ctx, ok)
}

// assertInvalid checks that err is a 422 Invalid naming field with a message that
// contains message.
func assertInvalid(t *testing.T, err error, field, message string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want rejection of %s (%q)", field, message)
	}
	if !apierrors.IsInvalid(err) {
		t.Fatalf("error is not Invalid (422): %v", err)
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		t.Fatalf("no details in error: %v", err)
	}
	for _, cause := range status.Status().Details.Causes {
		if cause.Field == field && strings.Contains(cause.Message, message) {
			return
		}
	}
	t.Fatalf("no cause on field %s containing %q; got %v", field, message, status.Status().Details.Causes)
}

// TestValidationAccepts proves that valid ServiceKeys are stored, with the API
// server filling in the defaults.
func TestValidationAccepts(t *testing.T) {
	expires := metav1.NewTime(time.Now().Add(365 * 24 * time.Hour).Truncate(time.Second))
	cases := map[string]struct {
		spec  func(*v1.ServiceKeySpec)
		check func(*testing.T, v1.ServiceKeySpec)
	}{
		"minimal, defaults filled in": {
			spec: func(*v1.ServiceKeySpec) {},
			check: func(t *testing.T, s v1.ServiceKeySpec) {
				want := v1.ServiceKeySpec{
					PrivateKey:     v1.PrivateKeySpec{Size: 2048, Encoding: v1.PKCS1},
					Rotation:       v1.RotationSpec{GracePeriod: dur(24 * time.Hour)},
					AccessTokenTTL: dur(time.Hour),
				}
				if !equality.Semantic.DeepEqual(s, want) {
					t.Errorf("defaults: got %+v, want %+v", s, want)
				}
			},
		},
		"fully specified, kept as given": {
			spec: func(s *v1.ServiceKeySpec) {
				s.Subject = "system:servicekey:default:full"
				s.Scopes = []string{"read", "write", "api:admin"}
				s.Audiences = []string{"https://api.example.com"}
				s.SecretName = "full-key"
				s.SecretTemplate = &v1.SecretTemplate{
					Labels:      map[string]v1.LabelValue{"team": "payments", "empty": "", "dotted": "a.b_c-d"},
					Annotations: map[string]string{"backup.example.com/exclude": "true"},
				}
				s.PrivateKey = v1.PrivateKeySpec{Size: 4096, Encoding: v1.PKCS8}
				s.Rotation = v1.RotationSpec{Every: dur(720 * time.Hour), GracePeriod: dur(48 * time.Hour)}
				s.ExpiresAt = &expires
				s.AllowedCIDRs = []string{"10.0.0.0/8", "fd00::/8"}
				s.AccessTokenTTL = dur(15 * time.Minute)
				s.Suspended = true
			},
			check: func(t *testing.T, s v1.ServiceKeySpec) {
				if s.PrivateKey.Size != 4096 || s.PrivateKey.Encoding != v1.PKCS8 ||
					s.Rotation.GracePeriod.Duration != 48*time.Hour || s.Rotation.Every.Duration != 720*time.Hour ||
					s.AccessTokenTTL.Duration != 15*time.Minute || !s.ExpiresAt.Equal(&expires) ||
					len(s.AllowedCIDRs) != 2 || len(s.Scopes) != 3 || !s.Suspended ||
					s.SecretTemplate.Labels["team"] != "payments" || s.SecretName != "full-key" {
					t.Errorf("stored spec differs from the one sent: %+v", s)
				}
			},
		},
		"validity instead of expiresAt, short every with explicit grace": {
			spec: func(s *v1.ServiceKeySpec) {
				s.Validity = dur(90 * 24 * time.Hour)
				s.Rotation = v1.RotationSpec{Every: dur(2 * time.Hour), GracePeriod: dur(30 * time.Minute)}
			},
			check: func(t *testing.T, s v1.ServiceKeySpec) {
				if s.Validity.Duration != 90*24*time.Hour || s.Rotation.GracePeriod.Duration != 30*time.Minute {
					t.Errorf("stored spec differs from the one sent: %+v", s)
				}
			},
		},
	}
	n := 0
	for name, tc := range cases {
		n++
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			sk := newKey(fmt.Sprintf("valid-%d", n))
			tc.spec(&sk.Spec)
			if err := k8s.Create(ctx, sk); err != nil {
				t.Fatalf("create: %v", err)
			}
			got := &v1.ServiceKey{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(sk), got); err != nil {
				t.Fatalf("get: %v", err)
			}
			tc.check(t, got.Spec)
		})
	}
}

// TestSecretNameUnchangedUpdateAllowed makes sure the immutability rule does not
// block ordinary updates of other fields.
func TestSecretNameUnchangedUpdateAllowed(t *testing.T) {
	ctx := context.Background()
	sk := newKey("update-other-fields")
	sk.Spec.SecretName = "stays"
	if err := k8s.Create(ctx, sk); err != nil {
		t.Fatalf("create: %v", err)
	}
	sk.Spec.Suspended = true
	sk.Spec.Scopes = []string{"read"}
	if err := k8s.Update(ctx, sk); err != nil {
		t.Fatalf("update of other fields refused: %v", err)
	}
}

// TestSamplesAreValid applies every sample in config/samples to the real API server,
// so the documented examples cannot rot.
func TestSamplesAreValid(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "auth_v1alpha1_*.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("samples: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var obj client.Object = &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Namespace: "samples"}}
			if strings.Contains(string(data), "\nkind: ServiceKeyPolicy\n") {
				obj = &v1.ServiceKeyPolicy{}
			}
			if err := yaml.UnmarshalStrict(data, obj); err != nil {
				t.Fatalf("sample does not match the Go types: %v", err)
			}
			if _, ok := obj.(*v1.ServiceKey); ok {
				obj.SetNamespace("samples")
			}
			if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "samples"}}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			if err := k8s.Create(context.Background(), obj); err != nil {
				t.Fatalf("the API server refused the sample: %v", err)
			}
		})
	}
}
