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
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

type process struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited
}

// Start runs the controller and the token server as local processes, each with the
// arguments the chart gives its Deployment (listen addresses moved to loopback) and
// a kubeconfig that impersonates the Deployment's ServiceAccount, so every API call
// is authorized by the chart's RBAC alone. It returns once both report ready.
func (s *Stack) Start(ctx context.Context) error {
	o := s.opts
	controller := append(append([]string{}, s.Controller.Args...),
		"--metrics-bind-address="+o.ControllerMetrics, "--health-probe-bind-address="+o.ControllerProbes)
	if err := s.run(&s.Controller, controller); err != nil {
		return err
	}
	if err := s.waitReady(ctx, "http://"+o.ControllerProbes+"/readyz", s.Controller.Log); err != nil {
		return err
	}
	tokenServer := append(append([]string{}, s.TokenServer.Args...),
		"--listen="+o.TokenAddress, "--metrics-bind-address="+o.TokenMetrics)
	if err := s.run(&s.TokenServer, tokenServer); err != nil {
		return err
	}
	return s.waitReady(ctx, "http://"+o.TokenAddress+"/readyz", s.TokenServer.Log)
}

// Stop ends both processes (SIGTERM, then waits).
func (s *Stack) Stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		p := s.procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
		_ = p.log.Close()
	}
	s.procs = nil
}

// kubeconfigAs writes a kubeconfig that acts as the given user, e.g. a component's
// ServiceAccount, through impersonation by the admin, and returns its path.
func (s *Stack) kubeconfigAs(user string) (string, error) {
	cfg, err := clientcmd.Load(s.opts.Env.KubeConfig)
	if err != nil {
		return "", fmt.Errorf("parse kubeconfig: %w", err)
	}
	for _, auth := range cfg.AuthInfos {
		auth.Impersonate = user
	}
	path := filepath.Join(s.opts.Dir, "kubeconfig-"+filepath.Base(user))
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", fmt.Errorf("write kubeconfig for %s: %w", user, err)
	}
	return path, nil
}

func (s *Stack) run(c *Component, args []string) error {
	kubeconfig, err := s.kubeconfigAs(c.ServiceAccount)
	if err != nil {
		return err
	}
	c.Log = filepath.Join(s.opts.Dir, c.Name+".log")
	log, err := os.Create(c.Log)
	if err != nil {
		return fmt.Errorf("create log: %w", err)
	}
	cmd := exec.Command(s.opts.Binary, append(args, "--kubeconfig="+kubeconfig)...) //nolint:gosec // our own binary with the chart's arguments
	cmd.Stdout, cmd.Stderr = log, log
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return fmt.Errorf("start %s (run 'make build' first): %w", s.opts.Binary, err)
	}
	p := &process{cmd: cmd, log: log, done: make(chan struct{})}
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
