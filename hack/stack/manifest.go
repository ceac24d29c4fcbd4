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

package stack

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Objects are Kubernetes objects from a multi-document YAML stream.
type Objects []*unstructured.Unstructured

// ParseObjects reads a YAML stream (helm or kustomize output), skipping empty documents.
func ParseObjects(data []byte) (Objects, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs Objects
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decode manifest: %w", err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// Find returns the object of that kind and name, or nil.
func (objs Objects) Find(kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// Deployment returns the named Deployment, typed.
func (objs Objects) Deployment(name string) (*appsv1.Deployment, error) {
	u := objs.Find("Deployment", name)
	if u == nil {
		return nil, fmt.Errorf("no Deployment %s in the manifest", name)
	}
	d := &appsv1.Deployment{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, d); err != nil {
		return nil, fmt.Errorf("decode Deployment %s: %w", name, err)
	}
	return d, nil
}

// Component reads one component from its Deployment: ServiceAccount and arguments.
func (objs Objects) Component(name string) (Component, error) {
	d, err := objs.Deployment(name)
	if err != nil {
		return Component{}, err
	}
	if len(d.Spec.Template.Spec.Containers) != 1 {
		return Component{}, fmt.Errorf("Deployment %s has %d containers, want 1", name, len(d.Spec.Template.Spec.Containers))
	}
	return Component{
		Name:           name,
		ServiceAccount: fmt.Sprintf("system:serviceaccount:%s:%s", d.Namespace, d.Spec.Template.Spec.ServiceAccountName),
		Args:           d.Spec.Template.Spec.Containers[0].Args,
	}, nil
}
