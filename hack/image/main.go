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

// Command image assembles a container image from static files, without a container
// engine and without pulling a base image: one layer holding the given files on an
// empty (scratch) base, an entrypoint and a numeric user. It writes the image as a
// docker-archive tarball that `ctr images import`, `docker load` and `podman load`
// read. `make image` uses it to build the same image the Dockerfile describes.
//
//	go run ./hack/image --tag ghcr.io/servicekey-operator/servicekey-operator:0.1.0 \
//	  --out bin/image/servicekey-operator.tar --user 65532:65532 \
//	  --entrypoint /servicekey-operator --file /servicekey-operator=bin/linux/servicekey-operator
//
// go-containerregistry builds the layer, config and manifest: it is the library ko,
// crane and Kubernetes' own image tooling use to write images without a daemon.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// files collects repeated --file dest=src flags.
type files map[string]string

func (f files) String() string { return fmt.Sprint(map[string]string(f)) }

func (f files) Set(v string) error {
	dest, src, ok := strings.Cut(v, "=")
	if !ok || !path.IsAbs(dest) || src == "" {
		return fmt.Errorf("--file wants /path/in/image=local/path, got %q", v)
	}
	f[path.Clean(dest)] = src
	return nil
}

func main() {
	fs := files{}
	tag := flag.String("tag", "", "image reference to tag the image with")
	out := flag.String("out", "", "docker-archive tarball to write")
	user := flag.String("user", "65532:65532", "numeric user:group the image runs as")
	entrypoint := flag.String("entrypoint", "", "entrypoint (one path; arguments come from the pod spec)")
	flag.Var(fs, "file", "dest=src: a file to put in the image (repeatable)")
	flag.Parse()
	if err := build(*tag, *out, *user, *entrypoint, fs); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func build(tag, out, user, entrypoint string, fs files) error {
	if tag == "" || out == "" || len(fs) == 0 {
		return errors.New("--tag, --out and at least one --file are required")
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("tag %q: %w", tag, err)
	}
	layerTar, err := layer(fs)
	if err != nil {
		return err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.User = user
	cf.Config.Env = []string{"PATH=/"}
	if entrypoint != "" {
		cf.Config.Entrypoint = []string{entrypoint}
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return fmt.Errorf("set config: %w", err)
	}
	if err := os.MkdirAll(path.Dir(out), 0o750); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	if err := tarball.WriteToFile(out, ref, img); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	fmt.Printf("%s %s -> %s\n", ref, digest, out)
	return nil
}

// layer is a reproducible tar of the files and their parent directories: root-owned,
// fixed timestamps, 0755 for a file executable on disk and 0644 for the others
// (whatever the builder's umask), so the image's user can read and run everything but
// write nothing.
func layer(fs files) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0).UTC()
	dirs := map[string]bool{}
	dests := make([]string, 0, len(fs))
	for d := range fs {
		dests = append(dests, d)
	}
	sort.Strings(dests)
	for _, dest := range dests {
		for _, d := range parents(dest) {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			hdr := &tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, fmt.Errorf("tar %s: %w", d, err)
			}
		}
		data, err := os.ReadFile(fs[dest])
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", fs[dest], err)
		}
		st, err := os.Stat(fs[dest])
		if err != nil {
			return nil, fmt.Errorf("stat %s: %w", fs[dest], err)
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(dest, "/"), Mode: mode(st.Mode()), Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar %s: %w", dest, err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", dest, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	return buf.Bytes(), nil
}

func mode(m os.FileMode) int64 {
	if m&0o111 != 0 {
		return 0o755
	}
	return 0o644
}

// parents lists the directories above p, outermost first ("/a/b/c" -> "/a", "/a/b").
func parents(p string) []string {
	var out []string
	for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
		out = append([]string{d}, out...)
	}
	return out
}
