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

// Package view holds the RBAC markers of the tenants' view role: reading ServiceKeys,
// whose status holds only public keys. controller-gen turns them into
// config/rbac/tenant-view/role.yaml (make manifests); kustomize and the Helm chart add
// the label that aggregates it into the built-in view ClusterRole.
//
// +kubebuilder:rbac:groups=auth.servicekey.dev,resources=servicekeys,verbs=get;list;watch
package view
