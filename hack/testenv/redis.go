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

package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a redis-server (the Debian package's) that a test started on a free
// loopback port, with the append-only file on (fsync every second, Redis's default),
// as the docs advise: a restart keeps the assertions already used. Stop and Start
// restart it on the same port.
type Redis struct {
	// Addr is host:port.
	Addr string
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartRedis starts redis-server and stops it when the test ends; it fails the test
// when redis-server is not installed (.ci/run installs it).
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r, err := RunRedis(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop() })
	return r
}

// RunRedis starts redis-server on a free loopback port with its files in dir; the
// caller stops it.
func RunRedis(dir string) (*Redis, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errors.New("redis-server is not installed: apt-get install redis-server (.ci/run does)")
	}
	addrs, err := FreePorts(1)
	if err != nil {
		return nil, err
	}
	r := &Redis{Addr: addrs[0], dir: dir}
	return r, r.Start()
}

// Version is redis-server's version line.
func (r *Redis) Version() string {
	out, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		return "(unknown version)"
	}
	return strings.TrimSpace(string(out))
}

// URL is the --shared-state value for this Redis.
func (r *Redis) URL() string { return "redis://" + r.Addr + "/0" }

// Start runs redis-server and waits until it answers PING.
func (r *Redis) Start() error {
	_, port, err := net.SplitHostPort(r.Addr)
	if err != nil {
		return fmt.Errorf("redis address %s: %w", r.Addr, err)
	}
	r.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", r.dir, //nolint:gosec // test binary
		"--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--loglevel", "warning")
	logFile, err := os.OpenFile(filepath.Join(r.dir, "redis.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("redis-server log: %w", err)
	}
	defer func() { _ = logFile.Close() }() // the child holds its own descriptor
	r.cmd.Stdout, r.cmd.Stderr = logFile, logFile
	DieWithParent(r.cmd)
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	r.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(r.cmd, r.done)
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
	defer func() { _ = c.Close() }()
	exited := false
	err = Poll("redis-server at "+r.Addr+" to answer", 20*time.Second, func() (bool, string) {
		select {
		case <-r.done:
			exited = true
			return true, ""
		default:
		}
		if err := c.Ping(context.Background()).Err(); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if exited {
		return fmt.Errorf("redis-server exited at start; see %s", filepath.Join(r.dir, "redis.log"))
	}
	return err
}

// Stop stops redis-server (SIGTERM: it closes its append-only file) and waits for it.
func (r *Redis) Stop() error {
	if r.cmd == nil || r.cmd.Process == nil {
		return nil
	}
	select {
	case <-r.done:
		return nil
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(20 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	return nil
}
