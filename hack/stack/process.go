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
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

type process struct {
	component *Component
	args      []string
	cmd       *exec.Cmd
	log       *os.File
	done      chan struct{} // closed when the process has exited
	started   time.Time
}

// Start runs the controller and the token server as local processes, each with the
// arguments the chart gives its Deployment (listen addresses moved to loopback) and
// a kubeconfig that impersonates the Deployment's ServiceAccount, so every API call
// is authorized by the chart's RBAC alone. It returns once both report ready.
func (s *Stack) Start(ctx context.Context) error {
	o := s.opts
	controller := append(append([]string{}, s.Controller.Args...),
		"--metrics-bind-address="+o.ControllerMetrics, "--health-probe-bind-address="+o.ControllerProbes)
	controller = append(controller, o.ControllerArgs...)
	if err := s.run(&s.Controller, controller); err != nil {
		return err
	}
	if err := s.waitReady(ctx, s.ControllerReadyURL(), s.Controller.Log); err != nil {
		return err
	}
	tokenServer := append(append([]string{}, s.TokenServer.Args...),
		"--listen="+o.TokenAddress, "--metrics-bind-address="+o.TokenMetrics)
	tokenServer = append(tokenServer, o.TokenServerArgs...)
	if err := s.run(&s.TokenServer, tokenServer); err != nil {
		return err
	}
	return s.waitReady(ctx, s.TokenServerReadyURL(), s.TokenServer.Log)
}

// Stop ends both processes (SIGTERM, then waits).
func (s *Stack) Stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		_ = s.procs[i].stop(syscall.SIGTERM)
	}
	s.procs = nil
}

// stop signals the process, waits for it to exit and closes its log. A process that
// has already exited (a controller that lost its lease) is only cleaned up.
func (p *process) stop(sig syscall.Signal) error {
	err := p.cmd.Process.Signal(sig)
	<-p.done
	_ = p.log.Close()
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// Exited reports whether the component's process has exited by itself, and how.
func (s *Stack) Exited(c *Component) (bool, string) {
	i := slices.IndexFunc(s.procs, func(p *process) bool { return p.component == c })
	if i < 0 {
		return false, ""
	}
	select {
	case <-s.procs[i].done:
		return true, s.procs[i].cmd.ProcessState.String()
	default:
		return false, ""
	}
}

// Pid is the process ID of the component's running process, 0 when none runs.
func (s *Stack) Pid(c *Component) int {
	p := s.proc(c)
	if p == nil {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// Started is when the component's running process was started.
func (s *Stack) Started(c *Component) time.Time {
	if p := s.proc(c); p != nil {
		return p.started
	}
	return time.Time{}
}

func (s *Stack) proc(c *Component) *process {
	i := slices.IndexFunc(s.procs, func(p *process) bool { return p.component == c })
	if i < 0 {
		return nil
	}
	return s.procs[i]
}

// Restart stops the component's process with sig (SIGKILL: a crash; SIGTERM: a
// rollout; a process that has exited is restarted as the kubelet would), starts it
// again with the same arguments plus extra (flags given later win), appending to its
// log, and waits until it reports ready at readyURL.
func (s *Stack) Restart(ctx context.Context, c *Component, sig syscall.Signal, readyURL string, extra ...string) error {
	i := slices.IndexFunc(s.procs, func(p *process) bool { return p.component == c })
	if i < 0 {
		return fmt.Errorf("%s is not running", c.Name)
	}
	p := s.procs[i]
	if err := p.stop(sig); err != nil {
		return fmt.Errorf("stop %s: %w", c.Name, err)
	}
	s.procs = slices.Delete(s.procs, i, i+1)
	if err := s.run(c, append(slices.Clip(p.args), extra...)); err != nil {
		return err
	}
	return s.waitReady(ctx, readyURL, c.Log)
}

// ControllerReadyURL is the controller's readiness endpoint.
func (s *Stack) ControllerReadyURL() string { return "http://" + s.opts.ControllerProbes + "/readyz" }

// TokenServerReadyURL is the token server's readiness endpoint.
func (s *Stack) TokenServerReadyURL() string { return "http://" + s.opts.TokenAddress + "/readyz" }

// TokenServerMetricsURL is the token server's Prometheus endpoint.
func (s *Stack) TokenServerMetricsURL() string { return "http://" + s.opts.TokenMetrics + "/metrics" }

// kubeconfigAs writes a kubeconfig that acts as the given user (Env.KubeconfigAs).
func (s *Stack) kubeconfigAs(user string) (string, error) {
	return s.opts.Env.KubeconfigAs(s.opts.Dir, user)
}

func (s *Stack) run(c *Component, args []string) error {
	kubeconfig, err := s.kubeconfigAs(c.ServiceAccount)
	if err != nil {
		return err
	}
	c.Log = filepath.Join(s.opts.Dir, c.Name+".log")
	log, err := os.OpenFile(c.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("create log: %w", err)
	}
	cmd := exec.Command(s.opts.Binary, append(args, "--kubeconfig="+kubeconfig)...) //nolint:gosec // our own binary with the chart's arguments
	cmd.Stdout, cmd.Stderr = log, log
	testenv.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return fmt.Errorf("start %s (run 'make build' first): %w", s.opts.Binary, err)
	}
	p := &process{component: c, args: args, cmd: cmd, log: log, done: make(chan struct{}), started: time.Now()}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	s.procs = append(s.procs, p)
	return nil
}

// waitReady polls url until it answers 200, failing at once when the process just
// started has exited (a port in use, a bad flag).
func (s *Stack) waitReady(ctx context.Context, url, log string) error {
	last := s.procs[len(s.procs)-1]
	exited := false
	err := testenv.Poll(url+" ready", time.Minute, func() (bool, string) {
		select {
		case <-last.done:
			exited = true
			return true, ""
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err.Error()
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	switch {
	case exited:
		return fmt.Errorf("%s exited (%v); see %s", filepath.Base(log), last.cmd.ProcessState, log)
	case err != nil:
		return fmt.Errorf("%w; see %s", err, log)
	}
	return nil
}
