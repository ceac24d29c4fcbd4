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

// Package edit holds the RBAC markers of the tenants' edit role: what a namespace
// editor or admin may do with ServiceKeys. controller-gen turns them into
// config/rbac/tenant-edit/role.yaml (make manifests); kustomize and the Helm chart add
// the labels that aggregate it into the built-in admin and edit ClusterRoles.
//
// It never grants servicekeys/status (the status publishes the keys the token server
// trusts) nor ServiceKeyPolicies (the cluster admin's grant of privileges).
//
// +kubebuilder:rbac:groups=auth.servicekey.dev,resources=servicekeys,verbs=get;list;watch;create;update;patch;delete;deletecollection
package edit
