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

// Package docstest runs the recipes of the Markdown docs, so a command a user copies
// from a page is one a test has run. A page marks each fenced block a user is meant to
// run with its info string:
//
//	```sh run                    executed, in page order, with bash -e -o pipefail
//	```sh skip <why>              shown, not executed here, counted with its reason
//	```yaml file=<name>           written to <name> in the page's directory, for a
//	                              later block to use (kubectl apply -f <name>)
//	```text expect                lines the previous run block must print, in order,
//	                              each a whole line ("..." stands for any text)
//
// A shell block (sh, bash, shell, console) that says neither run nor skip is an error,
// so no recipe goes unrun by accident. A page declares its placeholders and what it
// needs in an HTML comment, which Markdown renderers do not show:
//
//	<!-- docs-test: <namespace>=docs-clients <key-file>=billing.json needs=node -->
//
// Every <name> in a run or file block must be declared; the test substitutes the value
// (a value "$NAME" is taken from the test's environment: an address only it knows).
// Blocks run in a directory of the page's own, with links to the repository's
// top-level entries; a server a block starts in the background (its output sent to a
// file) serves the blocks after it and is stopped when the page ends.
package docstest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Kind says what the docs test does with a fenced block.
type Kind string

// The kinds of fenced blocks.
const (
	// Run blocks are executed.
	Run Kind = "run"
	// Skip blocks are recipes that cannot run here; they carry the reason.
	Skip Kind = "skip"
	// File blocks are written to a file a later run block uses.
	File Kind = "file"
	// Expect blocks list output lines of the run block before them.
	Expect Kind = "expect"
	// Other blocks (Go, YAML shown for reading, diagrams) are not the test's concern.
	Other Kind = "other"
)

// Block is one fenced code block of a page.
type Block struct {
	Line   int    // 1-based line of the opening fence
	Lang   string // first word of the info string
	Kind   Kind
	Reason string   // Skip: why it cannot run here
	File   string   // File: the file name
	Text   string   // the content, with the fence's indentation removed
	Expect []string // Run: the expected lines from the Expect block after it
}

// Page is a parsed Markdown page.
type Page struct {
	Path string
	// Placeholders maps "<name>" to the value the test substitutes.
	Placeholders map[string]string
	// Needs names what the page's recipes need beyond the local control plane
	// ("node": pods that run), so a test without it leaves the page to one with it.
	Needs  string
	Blocks []Block
}

var (
	// A directive is a line of its own, so one quoted in prose or code declares nothing.
	directiveRE   = regexp.MustCompile(`(?m)^[ \t]*<!--\s*docs-test:(.*?)-->[ \t]*$`)
	placeholderRE = regexp.MustCompile(`<[a-z][a-z0-9-]*>`)
	shellLangs    = map[string]bool{"sh": true, "bash": true, "shell": true, "console": true}
)

// Parse reads a Markdown page. It fails on a shell block without run or skip, an
// expect block that follows no run block, and an undeclared placeholder.
func Parse(path string, data []byte) (*Page, error) {
	p := &Page{Path: path, Placeholders: map[string]string{}}
	for _, m := range directiveRE.FindAllSubmatch(data, -1) {
		if err := p.declare(string(m[1])); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if err := p.readBlocks(data); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ReadPage reads and parses the page at rel (a path relative to root, the name used in
// messages).
func ReadPage(root, rel string) (*Page, error) {
	data, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		return nil, fmt.Errorf("read page: %w", err)
	}
	return Parse(rel, data)
}

func (p *Page) declare(directive string) error {
	for _, field := range strings.Fields(directive) {
		name, value, ok := strings.Cut(field, "=")
		switch {
		case !ok || value == "":
			return fmt.Errorf("docs-test directive: %q is not name=value", field)
		case name == "needs":
			p.Needs = value
		case placeholderRE.MatchString(name) && placeholderRE.FindString(name) == name:
			p.Placeholders[name] = value
		default:
			return fmt.Errorf("docs-test directive: unknown name %q (want <placeholder> or needs)", name)
		}
	}
	return nil
}

// readBlocks collects the fenced blocks; a fence may be indented (inside a list item).
func (p *Page) readBlocks(data []byte) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var open *Block
	var indent, fence string
	var text []string
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		if open == nil {
			if f := openingFence(trimmed); f != "" {
				indent, fence = line[:len(line)-len(trimmed)], f
				open, text = &Block{Line: n}, nil
				open.setInfo(strings.TrimSpace(trimmed[len(fence):]))
			}
			continue
		}
		// CommonMark: the closing fence is of the same character, at least as long.
		if f := leadingRun(trimmed, fence[0]); len(f) >= len(fence) && strings.TrimSpace(trimmed[len(f):]) == "" {
			open.Text = strings.Join(text, "\n") + "\n"
			if err := p.add(*open); err != nil {
				return err
			}
			open = nil
			continue
		}
		text = append(text, strings.TrimPrefix(line, indent))
	}
	if open != nil {
		return fmt.Errorf("line %d: fenced block never closed", open.Line)
	}
	return sc.Err()
}

// openingFence returns the fence a line opens (three or more backticks or tildes),
// or "". CommonMark: a backtick fence's info string has no backtick, so a line
// opening with ```` ```sh run ```` is inline code in prose.
func openingFence(line string) string {
	for _, c := range []byte{'`', '~'} {
		f := leadingRun(line, c)
		if len(f) >= 3 && (c == '~' || !strings.Contains(line[len(f):], "`")) {
			return f
		}
	}
	return ""
}

func leadingRun(s string, c byte) string {
	i := 0
	for i < len(s) && s[i] == c {
		i++
	}
	return s[:i]
}

func (b *Block) setInfo(info string) {
	words := strings.Fields(info)
	b.Kind = Other
	if len(words) == 0 {
		return
	}
	b.Lang = words[0]
	for i, w := range words[1:] {
		switch {
		case w == "run":
			b.Kind = Run
		case w == "expect":
			b.Kind = Expect
		case w == "skip":
			b.Kind, b.Reason = Skip, strings.Join(words[i+2:], " ")
			return
		case strings.HasPrefix(w, "file="):
			b.Kind, b.File = File, strings.TrimPrefix(w, "file=")
		}
	}
}

func (p *Page) add(b Block) error {
	switch {
	case b.Lang == "":
		return fmt.Errorf("line %d: a fenced block must name its language (sh run, text, yaml, ...)", b.Line)
	case b.Kind == Other && shellLangs[b.Lang]:
		return fmt.Errorf("line %d: a %s block must say `run`, or `skip <why it cannot run here>`", b.Line, b.Lang)
	case (b.Kind == Run || b.Kind == Skip) && !shellLangs[b.Lang]:
		return fmt.Errorf("line %d: only shell blocks (sh, bash, shell, console) run; this one is %s", b.Line, b.Lang)
	case b.Kind == Skip && b.Reason == "":
		return fmt.Errorf("line %d: `skip` needs the reason the recipe cannot run here", b.Line)
	case b.Kind == File && (b.File == "" || strings.ContainsAny(b.File, "/\\")):
		return fmt.Errorf("line %d: file=%q must name a file in the page's directory", b.Line, b.File)
	case b.Kind == Expect:
		if len(p.Blocks) == 0 || p.Blocks[len(p.Blocks)-1].Kind != Run {
			return fmt.Errorf("line %d: an expect block must follow a run block", b.Line)
		}
		last := &p.Blocks[len(p.Blocks)-1]
		for _, l := range strings.Split(b.Text, "\n") {
			l = strings.TrimSpace(l)
			if l == "" {
				continue
			}
			if strings.Trim(strings.ReplaceAll(l, "...", ""), " ") == "" {
				return fmt.Errorf("line %d: expected line %q matches anything", b.Line, l)
			}
			last.Expect = append(last.Expect, l)
		}
		return nil
	case b.Kind == Run || b.Kind == File:
		if missing := p.undeclared(b.Text); len(missing) > 0 {
			return fmt.Errorf("line %d: placeholders %s are not declared (<!-- docs-test: <name>=value -->)", b.Line, strings.Join(missing, ", "))
		}
	}
	p.Blocks = append(p.Blocks, b)
	return nil
}

func (p *Page) undeclared(text string) []string {
	seen := map[string]bool{}
	for _, name := range placeholderRE.FindAllString(text, -1) {
		if _, ok := p.Placeholders[name]; !ok {
			seen[name] = true
		}
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Substitute replaces the page's placeholders in text.
func (p *Page) Substitute(text string) string {
	return placeholderRE.ReplaceAllStringFunc(text, func(name string) string {
		if v, ok := p.Placeholders[name]; ok {
			return v
		}
		return name
	})
}

// Count returns how many blocks of the page are run and how many skipped.
func (p *Page) Count() (run, skipped int) {
	for _, b := range p.Blocks {
		switch b.Kind {
		case Run:
			run++
		case Skip:
			skipped++
		}
	}
	return run, skipped
}
