//go:build cluster

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

package cluster_test

import (
	"os"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

const (
	release      = "skc"
	systemNS     = "servicekey-system"
	teamNS       = "team-a"
	tokenService = release + "-servicekey-operator-token-server"
	issuer       = "http://" + tokenService + "." + systemNS + ".svc"
	apiHost      = "resource-server." + teamNS + ".svc"
	apiAudience  = "http://" + apiHost + ":8000"
	keyName      = "billing-client"
)

// The images make image built and the test imported (make test-cluster passes them).
var (
	operatorImage = os.Getenv("CLUSTER_IMAGE")
	examplesImage = os.Getenv("CLUSTER_EXAMPLES_IMAGE")
)

// restricted is a namespace where Pod Security's restricted profile is enforced: a pod
// that runs as root, can escalate or keeps a capability is refused at admission.
func restricted(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest",
	}}}
}

// serviceKey: the workload's key, for the example resource server's audience and
// scope; access tokens live one minute, so the client signs a grant for every call
// and a rotated key is used from the first call after the kubelet updates the file.
func serviceKey() *v1.ServiceKey {
	return &v1.ServiceKey{
		ObjectMeta: metav1.ObjectMeta{Name: keyName, Namespace: teamNS},
		Spec: v1.ServiceKeySpec{Scopes: []string{"read"}, Audiences: []string{apiAudience},
			AccessTokenTTL: &metav1.Duration{Duration: 60e9}},
	}
}

// podSecurity and containerSecurity pass the restricted profile.
func podSecurity() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](65532),
		FSGroup: ptr.To[int64](65532), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
}

func containerSecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
}

func deployment(name string, spec corev1.PodSpec) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	spec.SecurityContext = podSecurity()
	for i := range spec.Containers {
		spec.Containers[i].Image, spec.Containers[i].ImagePullPolicy = examplesImage, corev1.PullNever
		spec.Containers[i].SecurityContext = containerSecurity()
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: teamNS},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec}},
	}
}

// resourceServer is examples/resource-server behind a Service: it checks the tokens'
// issuer (discovered through the token server's Service, its name resolved by the
// cluster DNS), audience and scope.
func resourceServer() (*appsv1.Deployment, *corev1.Service) {
	d := deployment("resource-server", corev1.PodSpec{
		Containers: []corev1.Container{{
			Name: "api", Command: []string{"/resource-server", "--issuer=" + issuer, "--audience=" + apiAudience, "--listen=:8000"},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8000}},
		}},
	})
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "resource-server", Namespace: teamNS},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "resource-server"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 8000, TargetPort: intstr.FromString("http")}}},
	}
	return d, svc
}

// workload is examples/client mounting the ServiceKey's Secret as a volume, the way
// docs/clients.md shows, and calling the API twice a second until stopped; the issuer
// in the key file and the API's host are Service names the cluster DNS resolves.
func workload(secretName string) *appsv1.Deployment {
	return deployment("workload", corev1.PodSpec{
		Containers: []corev1.Container{{
			Name: "client",
			Command: []string{"/client", "--key-file=/var/run/servicekey/key.json", "--url=" + apiAudience + "/hello",
				"--allow-insecure-http", "--interval=500ms"},
			VolumeMounts: []corev1.VolumeMount{{Name: "servicekey", MountPath: "/var/run/servicekey", ReadOnly: true}},
		}},
		Volumes: []corev1.Volume{{Name: "servicekey", VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: secretName, DefaultMode: ptr.To[int32](0o440)},
		}}},
	})
}
