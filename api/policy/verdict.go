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

package policy

import (
	"slices"
	"sort"
	"strings"
)

// Verdict is the outcome of judging one ServiceKey against every policy.
type Verdict struct {
	// Allowed: at least one policy selecting the namespace permits all of the key.
	Allowed bool
	// By names the permitting policy (the first by name) when Allowed.
	By string
	// Namespace is the ServiceKey's namespace.
	Namespace string
	// UnknownNamespace: the namespace's labels were not known, so nothing was judged
	// (not allowed; callers retry rather than report a refusal).
	UnknownNamespace bool
	// MinKeySize is the smallest minKeySize among the policies that permit the key (0:
	// one of them sets none): every key that verifies a grant must be at least this
	// large, not only the size the spec asks for next.
	MinKeySize int32
	// Considered are the policies that select the namespace, by name.
	Considered []string
	// Invalid are the policies left out because their selector is unusable.
	Invalid []string
	// Gaps are what no considered policy allows; empty when denied only because no
	// single policy allows everything (see PerPolicy) or none selects the namespace.
	Gaps []Gap
	// PerPolicy holds each considered policy's gaps when no policy permits the key.
	PerPolicy map[string][]Gap
}

// Evaluate judges r against the policies, given the labels of r's namespace. Unknown
// labels (nil) permit nothing: a selector such as "team DoesNotExist" must not match a
// namespace whose labels are not known yet. Policies are considered in name order, so
// messages are stable.
func Evaluate(r Request, nsLabels map[string]string, policies []Policy) Verdict {
	if nsLabels == nil {
		return Verdict{Namespace: r.Namespace, UnknownNamespace: true}
	}
	sorted := slices.Clone(policies)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	v := Verdict{Namespace: r.Namespace, PerPolicy: map[string][]Gap{}}
	var permitting []Policy
	for _, p := range sorted {
		switch {
		case p.Err() != nil:
			v.Invalid = append(v.Invalid, p.Name)
		case p.Selects(nsLabels):
			if gaps := p.Gaps(r); len(gaps) == 0 {
				permitting = append(permitting, p)
			} else {
				v.Considered = append(v.Considered, p.Name)
				v.PerPolicy[p.Name] = gaps
			}
		}
	}
	if len(permitting) > 0 {
		allowed := Verdict{Allowed: true, By: permitting[0].Name, Namespace: r.Namespace, MinKeySize: permitting[0].Spec.MinKeySize}
		for _, p := range permitting[1:] {
			allowed.MinKeySize = min(allowed.MinKeySize, p.Spec.MinKeySize)
		}
		return allowed
	}
	// What no considered policy allows: the gaps every one of them has.
	for i, name := range v.Considered {
		if i == 0 {
			v.Gaps = slices.Clone(v.PerPolicy[name])
			continue
		}
		v.Gaps = slices.DeleteFunc(v.Gaps, func(g Gap) bool { return !slices.Contains(v.PerPolicy[name], g) })
	}
	return v
}

// Message says why the key is refused, naming exactly what no policy allows and the
// policies considered; "" when allowed. It never contains key material: only names,
// scopes, audiences, subjects and numbers from specs.
func (v Verdict) Message() string {
	if v.Allowed {
		return ""
	}
	var b strings.Builder
	switch {
	case v.UnknownNamespace:
		b.WriteString("the labels of namespace " + v.Namespace + " are not known yet")
	case len(v.Considered) == 0:
		b.WriteString("no ServiceKeyPolicy selects namespace " + v.Namespace)
	case len(v.Gaps) > 0:
		b.WriteString("not allowed by any ServiceKeyPolicy selecting namespace " + v.Namespace + ": " + joinGaps(v.Gaps) +
			" (considered: " + strings.Join(v.Considered, ", ") + ")")
	default:
		b.WriteString("no single ServiceKeyPolicy selecting namespace " + v.Namespace + " allows all of it:")
		for i, name := range v.Considered {
			if i > 0 {
				b.WriteString(";")
			}
			b.WriteString(" " + name + " does not allow " + joinGaps(v.PerPolicy[name]))
		}
	}
	if len(v.Invalid) > 0 {
		b.WriteString("; ignored for an invalid namespaceSelector: " + strings.Join(v.Invalid, ", "))
	}
	return b.String()
}

// Kinds are the kinds of privilege that caused the refusal, each once, for metrics.
func (v Verdict) Kinds() []Kind {
	if v.Allowed || v.UnknownNamespace {
		return nil
	}
	if len(v.Considered) == 0 {
		return []Kind{KindNoPolicy}
	}
	var out []Kind
	for _, name := range v.Considered {
		for _, g := range v.PerPolicy[name] {
			if !slices.Contains(out, g.Kind) {
				out = append(out, g.Kind)
			}
		}
	}
	return out
}

// OnlyScopes says whether every gap is a scope: the token endpoint then answers
// invalid_scope (RFC 6749 §5.2) rather than unauthorized_client.
func (v Verdict) OnlyScopes() bool {
	kinds := v.Kinds()
	return len(kinds) == 1 && kinds[0] == KindScope
}

func joinGaps(gaps []Gap) string {
	parts := make([]string, len(gaps))
	for i, g := range gaps {
		parts[i] = g.String()
	}
	return strings.Join(parts, ", ")
}
