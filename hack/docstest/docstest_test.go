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

package docstest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := map[string]struct {
		page    string
		wantErr string
		check   func(t *testing.T, p *Page)
	}{
		"run, expect, skip, file and other blocks": {
			page: "<!-- docs-test: <ns>=docs-x needs=node -->\n" +
				"```sh run\nkubectl get ns <ns>\n```\nprints:\n```text expect\nActive\n\n```\n" +
				"```sh skip needs a real Ingress\ncurl https://token.example.com\n```\n" +
				"   ```yaml file=sk.yaml\n   namespace: <ns>\n   ```\n```go\nx := 1\n```\n",
			check: func(t *testing.T, p *Page) {
				if p.Needs != "node" || p.Placeholders["<ns>"] != "docs-x" {
					t.Errorf("directive: needs %q, placeholders %v", p.Needs, p.Placeholders)
				}
				kinds := []Kind{}
				for _, b := range p.Blocks {
					kinds = append(kinds, b.Kind)
				}
				if got := strings.Join(toStrings(kinds), ","); got != "run,skip,file,other" {
					t.Fatalf("kinds %s", got)
				}
				if got := p.Blocks[0].Expect; len(got) != 1 || got[0] != "Active" {
					t.Errorf("expect %q", got)
				}
				if p.Blocks[1].Reason != "needs a real Ingress" {
					t.Errorf("reason %q", p.Blocks[1].Reason)
				}
				if p.Blocks[2].Text != "namespace: <ns>\n" || p.Substitute(p.Blocks[2].Text) != "namespace: docs-x\n" {
					t.Errorf("indented file block %q", p.Blocks[2].Text)
				}
				if run, skipped := p.Count(); run != 1 || skipped != 1 {
					t.Errorf("count %d run, %d skipped", run, skipped)
				}
			},
		},
		"an unmarked shell block": {page: "```sh\nmake demo\n```\n", wantErr: "line 1: a sh block must say `run`"},
		"skip without a reason":   {page: "```bash skip\nx\n```\n", wantErr: "`skip` needs the reason"},
		"expect after nothing":    {page: "```text expect\nok\n```\n", wantErr: "must follow a run block"},
		"expect after a skip": {
			page:    "```sh skip no node\nx\n```\n```text expect\nok\n```\n",
			wantErr: "must follow a run block",
		},
		"undeclared placeholder": {
			page:    "```sh run\nkubectl -n <namespace> get sk <name>\n```\n",
			wantErr: "placeholders <name>, <namespace> are not declared",
		},
		"file outside the page directory": {page: "```yaml file=../x.yaml\na: b\n```\n", wantErr: "must name a file"},
		"unknown directive":               {page: "<!-- docs-test: ns=x -->\n", wantErr: `unknown name "ns"`},
		"unclosed fence":                  {page: "```sh run\nls\n", wantErr: "never closed"},
		"inline code at the start of a line is no fence": {
			page: "```` ```sh run ```` marks a block.\n```sh run\nls\n```\n",
			check: func(t *testing.T, p *Page) {
				if len(p.Blocks) != 1 || p.Blocks[0].Line != 2 {
					t.Errorf("blocks %+v", p.Blocks)
				}
			},
		},
		"an unnamed fence":         {page: "```\nmake bench\n```\n", wantErr: "must name its language"},
		"a tilde fence is a fence": {page: "~~~sh\nls\n~~~\n", wantErr: "must say `run`"},
		"a longer closing fence closes": {
			page:    "```text\nx\n````\n```sh\nls\n```\n",
			wantErr: "line 4: a sh block must say `run`",
		},
		"only shell runs":       {page: "```yaml run\na: b\n```\n", wantErr: "only shell blocks"},
		"a vacuous expectation": {page: "```sh run\nls\n```\n```text expect\n...\n```\n", wantErr: "matches anything"},
		"a quoted directive declares nothing": {
			page: "Pages declare `<!-- docs-test: <ns>=x -->` in a comment.\n",
			check: func(t *testing.T, p *Page) {
				if len(p.Placeholders) != 0 {
					t.Errorf("placeholders %v", p.Placeholders)
				}
			},
		},
		"heredoc is no placeholder": {
			page: "```sh run\ncat <<'YAML' >x\na: b\nYAML\n```\n",
			check: func(t *testing.T, p *Page) {
				if len(p.Blocks) != 1 {
					t.Errorf("blocks %d", len(p.Blocks))
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := Parse("page.md", []byte(tc.page))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, p)
		})
	}
}

func toStrings(kinds []Kind) []string {
	s := make([]string, len(kinds))
	for i, k := range kinds {
		s[i] = string(k)
	}
	return s
}

func TestMatch(t *testing.T) {
	out := "NAME      READY\nbilling   True\nissued key 0mKYUg for payments/billing\n"
	tests := map[string]struct {
		expect []string
		ok     bool
	}{
		"in order":                      {expect: []string{"NAME ... READY", "billing   True"}, ok: true},
		"whole lines only":              {expect: []string{"billing"}},
		"leading wildcard":              {expect: []string{"...payments/billing"}, ok: true},
		"wildcard":                      {expect: []string{"issued key ... for payments/billing"}, ok: true},
		"out of order":                  {expect: []string{"billing   True", "NAME      READY"}},
		"missing":                       {expect: []string{"False"}},
		"wildcard across lines":         {expect: []string{"READY...True"}},
		"regexp characters are literal": {expect: []string{"billing.*True"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if err := Match(out, tc.expect); (err == nil) != tc.ok {
				t.Errorf("Match(%q) = %v, want ok=%v", tc.expect, err, tc.ok)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	out := Redact("token eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln\n" +
		`{"access_token": "opaque-123", "scope": "a"}` + "\n" +
		"client_secret: plain-456\n" +
		`  "client-secret": "hyphen-789",` + "\n" +
		"  password=pw-000\n" +
		"  client-id: " + strings.Repeat("QkM", 20) + "\n" +
		"  key.json: " + strings.Repeat("QUJD", 30) + "\n" +
		"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n" +
		"-----BEGIN RSA PRIVATE KEY-----\nMIIF cut short")
	for _, secret := range []string{"eyJhbGci", "opaque-123", "plain-456", "hyphen-789", "pw-000", "QkMQkMQkM", "QUJDQUJD", "MIIE", "MIIF"} {
		if strings.Contains(out, secret) {
			t.Errorf("%q survives redaction: %s", secret, out)
		}
	}
	if !strings.Contains(out, `"scope": "a"`) {
		t.Errorf("redaction removed more than secrets: %s", out)
	}
}

// TestRepositoryPagesParse holds every page of the repository to the markers, so a
// shell block nobody marked fails in make test, before the e2e run.
func TestRepositoryPagesParse(t *testing.T) {
	for _, path := range repoPages(t) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(path, data); err != nil {
			t.Error(err)
		}
	}
}

// repoPages returns README.md and docs/*.md of the repository this test runs in.
func repoPages(t *testing.T) []string {
	t.Helper()
	root := filepath.Join("..", "..")
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs found: %v", err)
	}
	return append([]string{filepath.Join(root, "README.md")}, docs...)
}

// TestRunPage runs small pages with real bash: what a page leaves running is stopped,
// a block past the timeout is stopped with all it started, and a failure's output is
// redacted.
func TestRunPage(t *testing.T) {
	tests := map[string]struct {
		page    string
		wantErr string
		check   func(t *testing.T, dir string, err error)
	}{
		"a background process is stopped when the page ends": {
			page:  "```sh run\nsleep 300 > /dev/null 2>&1 &\necho $! > pid\n```\n",
			check: func(t *testing.T, dir string, _ error) { waitGone(t, pidIn(t, dir)) },
		},
		"a block past the timeout is stopped with what it started": {
			page:    "```sh run\nsleep 300 > /dev/null 2>&1 &\necho $! > pid\nsleep 300\n```\n",
			wantErr: "timed out",
			check:   func(t *testing.T, dir string, _ error) { waitGone(t, pidIn(t, dir)) },
		},
		"an expected line missing fails": {
			page:    "```sh run\necho ready\n```\n```text expect\nnot ready\n```\n",
			wantErr: `expected output line not printed (in order): "not ready"`,
		},
		"a failure's output is redacted": {
			page:    "```sh run\necho '-----BEGIN PRIVATE KEY-----'; echo MIIE$((6*7))secret; exit 3\n```\n",
			wantErr: "exit status 3",
			check: func(t *testing.T, _ string, err error) {
				if strings.Contains(err.Error(), "MIIE42secret") {
					t.Errorf("the error holds the private key: %v", err)
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := Parse("page.md", []byte(tc.page))
			if err != nil {
				t.Fatal(err)
			}
			r := &Runner{Repo: t.TempDir(), Dir: t.TempDir(), Env: []string{"PATH=/usr/bin:/bin"}, Timeout: 2 * time.Second}
			_, err = r.RunPage(context.Background(), p, t.Logf)
			if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, filepath.Join(r.Dir, "page"), err)
			}
		})
	}
}

func pidIn(t *testing.T, dir string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// waitGone polls until the process is gone (reaped by init once killed).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d still runs", pid)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}
