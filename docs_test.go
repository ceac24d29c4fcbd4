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

package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// messageSources are the places user-facing error texts are written, each with a
// pattern whose first group is the text (or its literal start, before a value).
var messageSources = map[string]*regexp.Regexp{
	"tokenserver/*.go":          regexp.MustCompile(`(?:newError\([\w.]+, |Description: |return )"([^"]{8,})"`),
	"controllers/plan.go":       regexp.MustCompile(`return v1\.Reason\w+, "([^"]+)"`),
	"controllers/desired.go":    regexp.MustCompile(`c\.Message = "([^"]+)"`),
	"controllers/policy_*.go":   regexp.MustCompile(`c\.Message = "([^"]+)"`),
	"api/policy/*.go":           regexp.MustCompile(`WriteString\("([^"]{8,})"`),
	"verifier/verifier.go":      regexp.MustCompile(`(?:writeError\(w, [\w.]+, "[a-z_]+", |errors\.New\(|return )"([^"]{8,})"`),
	"api/v1alpha1/*_types.go":   regexp.MustCompile(`message="([^"]+)"`),
	"api/josecheck/*.go":        regexp.MustCompile(`(?:return |\}, )"([^"]{8,})"`),
	"client/*.go":               regexp.MustCompile(`fmt\.Errorf\("(client: [^"%]{8,})`),
	"api/v1alpha1/constants.go": regexp.MustCompile(`(?:Reason|Event)\w+ = "(\w+)"`),
}

// TestTroubleshootingCoversEveryError fails when the code gains an error message, a
// Ready reason or an event that docs/troubleshooting.md does not list, so the page a
// user searches for their error stays complete.
func TestTroubleshootingCoversEveryError(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("docs", "troubleshooting.md"))
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for glob, re := range messageSources {
		files, err := filepath.Glob(glob)
		if err != nil || len(files) == 0 {
			t.Fatalf("no files match %s", glob)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range re.FindAllStringSubmatch(string(src), -1) {
				found++
				if !strings.Contains(string(doc), m[1]) {
					t.Errorf("%s: %q is not in docs/troubleshooting.md", f, m[1])
				}
			}
		}
	}
	t.Logf("%d messages checked", found)
	if found < 60 {
		t.Fatalf("found only %d messages: the patterns no longer match the code", found)
	}
}
