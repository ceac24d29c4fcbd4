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

package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// proc is one component of the cluster running as a child process, its output in
// logs/<name>.log under the cluster's directory.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// start runs bin with args; env entries are added to this process's environment.
// The child gets SIGKILL should this process die first, so a crashed test leaves no
// control plane behind (the teardown of pods and network needs a live test).
func (c *Cluster) start(name, bin string, args []string, env ...string) (*proc, error) {
	p := &proc{name: name, log: filepath.Join(c.Dir, "logs", name+".log"), done: make(chan struct{})}
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create log of %s: %w", name, err)
	}
	p.cmd = exec.Command(bin, args...) //nolint:gosec // the cluster's own binaries
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		_ = out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		_ = out.Close()
		close(p.done)
	}()
	c.procs = append(c.procs, p)
	c.logf("%s started (pid %d, log %s)", name, p.cmd.Process.Pid, p.log)
	return p, nil
}

// exited reports whether the process has ended, and how.
func (p *proc) exited() (bool, string) {
	select {
	case <-p.done:
		return true, fmt.Sprintf("%s exited (%v); see %s", p.name, p.cmd.ProcessState, p.log)
	default:
		return false, ""
	}
}

// stop sends SIGTERM to the process group and SIGKILL after grace.
func (p *proc) stop(grace time.Duration) error {
	if done, _ := p.exited(); done {
		return nil
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
		return fmt.Errorf("%s ignored SIGTERM for %v and was killed", p.name, grace)
	case <-time.After(10 * time.Second):
		return errors.New(p.name + " survived SIGKILL")
	}
}

// poll polls cond until it holds, failing at once when a component has exited.
func (c *Cluster) poll(ctx context.Context, what string, timeout time.Duration, cond func() (bool, string)) error {
	var died string
	err := testenv.Poll(what, timeout, func() (bool, string) {
		if ctx.Err() != nil {
			return true, ""
		}
		for _, p := range c.procs {
			if done, how := p.exited(); done {
				died = how
				return true, ""
			}
		}
		return cond()
	})
	switch {
	case died != "":
		return errors.New(died)
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return err
}

// waitHTTP polls url until it answers 200.
func (c *Cluster) waitHTTP(ctx context.Context, p *proc, url string, client *http.Client) error {
	return c.poll(ctx, p.name+" healthy", 2*time.Minute, func() (bool, string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err.Error()
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
}
