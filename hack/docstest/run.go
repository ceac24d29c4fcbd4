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
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// Runner executes a page's blocks in order, in a directory of the page's own, so
// files a recipe writes (key.json) stay there and relative paths of the repository
// (charts/servicekey-operator, examples/...) resolve through links to it.
type Runner struct {
	// Repo is the repository root; its top-level entries are linked into each page's
	// directory.
	Repo string
	// Dir is where the pages' directories are made.
	Dir string
	// Env is the environment of every block (PATH, KUBECONFIG, ...).
	Env []string
	// Timeout bounds each block.
	Timeout time.Duration
}

// ToolPath makes a directory in dir with a link to each tool under the name the docs
// use (kubectl, helm, python3, ...) and returns a PATH with it first, then extra (Go's
// own directory), then the system's.
func ToolPath(dir string, tools map[string]string, extra ...string) (string, error) {
	bin := filepath.Join(dir, "tools")
	if err := os.MkdirAll(bin, 0o750); err != nil {
		return "", fmt.Errorf("tool directory: %w", err)
	}
	for name, target := range tools {
		if _, err := os.Stat(target); err != nil {
			return "", fmt.Errorf("%s for the docs: %w", name, err)
		}
		if err := os.Symlink(target, filepath.Join(bin, name)); err != nil {
			return "", fmt.Errorf("link %s: %w", name, err)
		}
	}
	dirs := append(append([]string{bin}, extra...), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
	return "PATH=" + strings.Join(dirs, ":"), nil
}

// Result says what happened to a page.
type Result struct {
	Run, Skipped int
	// Skips lists "line N: reason" for each skipped block.
	Skips []string
}

// RunPage runs every run block of p and writes every file block; it stops at the
// first block that exits non-zero or misses an expected line. logf receives one line
// per block, with secrets redacted.
func (r *Runner) RunPage(ctx context.Context, page *Page, logf func(string, ...any)) (Result, error) {
	var res Result
	p, err := r.resolve(page)
	if err != nil {
		return res, err
	}
	dir, err := r.pageDir(p)
	if err != nil {
		return res, err
	}
	// A recipe may leave a server running for the blocks after it (`... &`); each block
	// is a process group, and every group still alive is stopped when the page ends.
	var groups []int
	defer func() { stopGroups(groups) }()
	for _, b := range p.Blocks {
		switch b.Kind {
		case Skip:
			res.Skipped++
			res.Skips = append(res.Skips, fmt.Sprintf("line %d: %s", b.Line, b.Reason))
		case File:
			path := filepath.Join(dir, b.File)
			if err := os.WriteFile(path, []byte(p.Substitute(b.Text)), 0o600); err != nil {
				return res, fmt.Errorf("%s:%d: write %s: %w", p.Path, b.Line, b.File, err)
			}
		case Run:
			start := time.Now()
			out, pgid, err := r.run(ctx, dir, p.Substitute(b.Text))
			if pgid > 0 && syscall.Kill(-pgid, 0) == nil {
				groups = append(groups, pgid) // something of the block still runs
			}
			if err == nil {
				err = Match(out, expectations(p, b))
			}
			if err != nil {
				return res, fmt.Errorf("%s:%d: %w\n--- the block:\n%s--- its output:\n%s", p.Path, b.Line, err, b.Text, Redact(out))
			}
			res.Run++
			logf("%s:%d: ok in %s", p.Path, b.Line, time.Since(start).Round(time.Millisecond))
		}
	}
	return res, nil
}

func expectations(p *Page, b Block) []string {
	lines := make([]string, len(b.Expect))
	for i, l := range b.Expect {
		lines[i] = p.Substitute(l)
	}
	return lines
}

// pageDir makes the page's directory with a link to each top-level entry of the
// repository but bin/, and a home of its own (kubectl and helm keep caches there).
func (r *Runner) pageDir(p *Page) (string, error) {
	name := strings.NewReplacer("/", "_", ".md", "").Replace(p.Path)
	dir := filepath.Join(r.Dir, name)
	if err := os.MkdirAll(filepath.Join(dir, ".home"), 0o700); err != nil {
		return "", fmt.Errorf("page directory: %w", err)
	}
	entries, err := os.ReadDir(r.Repo)
	if err != nil {
		return "", fmt.Errorf("read repository: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || e.Name() == "bin" {
			continue // bin/: what a recipe builds stays in the page's directory
		}
		link := filepath.Join(dir, e.Name())
		if err := os.Symlink(filepath.Join(r.Repo, e.Name()), link); err != nil && !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("link %s: %w", e.Name(), err)
		}
	}
	return dir, nil
}

// stopGroups sends SIGTERM to each process group, and SIGKILL to those still there a
// few seconds later.
func stopGroups(groups []int) {
	for _, g := range groups {
		_ = syscall.Kill(-g, syscall.SIGTERM)
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, g := range groups {
		for syscall.Kill(-g, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond) // waiting for processes to exit; no signal tells
		}
		_ = syscall.Kill(-g, syscall.SIGKILL)
	}
}

// resolve returns the page with each placeholder value "$NAME" replaced by NAME from
// the runner's environment (values only the test knows, such as a port).
func (r *Runner) resolve(p *Page) (*Page, error) {
	q := *p
	q.Placeholders = map[string]string{}
	for name, value := range p.Placeholders {
		if env, ok := strings.CutPrefix(value, "$"); ok {
			if value = r.getenv(env); value == "" {
				return nil, fmt.Errorf("%s: placeholder %s=$%s: %s is not set", p.Path, name, env, env)
			}
		}
		q.Placeholders[name] = value
	}
	return &q, nil
}

func (r *Runner) getenv(name string) string {
	for _, kv := range r.Env {
		if k, v, _ := strings.Cut(kv, "="); k == name {
			return v
		}
	}
	return ""
}

func (r *Runner) run(ctx context.Context, dir, script string) (string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script) //nolint:gosec // the docs' own recipes, run as a user runs them
	cmd.Dir = dir
	cmd.Env = append(append([]string{}, r.Env...), "HOME="+filepath.Join(dir, ".home"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// A recipe that starts a background process must not hold the test past the block.
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err := cmd.Run()
	pgid := 0
	if cmd.Process != nil {
		pgid = cmd.Process.Pid
	}
	if ctx.Err() != nil {
		return out.String(), pgid, fmt.Errorf("timed out after %s", r.Timeout)
	}
	if err != nil {
		return out.String(), pgid, fmt.Errorf("exit: %w", err)
	}
	return out.String(), pgid, nil
}

// Match checks that each expected line is printed, in order: it must equal a whole
// output line (space around it aside), where "..." stands for any text.
func Match(out string, expect []string) error {
	lines := strings.Split(out, "\n")
	i := 0
	for _, want := range expect {
		re := lineRE(want)
		for i < len(lines) && !re.MatchString(lines[i]) {
			i++
		}
		if i == len(lines) {
			return fmt.Errorf("expected output line not printed (in order): %q", want)
		}
		i++
	}
	return nil
}

func lineRE(want string) *regexp.Regexp {
	parts := strings.Split(want, "...")
	for i, part := range parts {
		parts[i] = regexp.QuoteMeta(part)
	}
	return regexp.MustCompile(`^\s*` + strings.Join(parts, ".*") + `\s*$`)
}

var secretREs = []struct {
	re   *regexp.Regexp
	with string
}{
	// Through the END line, or to the end of an output cut short.
	{regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----(?:[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----|[\s\S]*$)`), "[private key redacted]"},
	{regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`), "[JWT redacted]"},
	{regexp.MustCompile(`("?(?:private[-_]key|client[-_]secret|access[-_]token|refresh[-_]token|assertion|password)"?\s*[:=]\s*)("[^"]*"|\S+)`), `$1[redacted]`},
	// Base64 as a Secret's data shows it (kubectl get secret -o yaml): a 32-byte client
	// secret is 60 characters there, a key ID 43 (redacted too; only failures are shown).
	{regexp.MustCompile(`[A-Za-z0-9+/]{40,}={0,2}`), "[base64 redacted]"},
}

// Redact removes private keys, JWTs, secret fields (JSON, YAML, key=value) and long
// base64 (a Secret's data) from a recipe's output before it reaches a test log.
func Redact(out string) string {
	for _, r := range secretREs {
		out = r.re.ReplaceAllString(out, r.with)
	}
	return out
}
