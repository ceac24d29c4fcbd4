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

// Package v1alpha1 holds the ServiceKey API of group auth.servicekey.dev.
//
// A ServiceKey asks the controller for an RSA key pair: the private key goes into a
// Secret that workloads mount, the public key is published in the status, and the
// token server exchanges JWT grants signed with that key for short-lived access tokens.
//
// +kubebuilder:object:generate=true
// +groupName=auth.servicekey.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "auth.servicekey.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this package's types with a runtime.Scheme. It uses only
	// apimachinery so that importing the API pulls in no controller machinery.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's types to a scheme; managers and clients call it
	// so they can encode and decode ServiceKeys.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &ServiceKey{}, &ServiceKeyList{}, &ServiceKeyPolicy{}, &ServiceKeyPolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
