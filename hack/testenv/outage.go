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
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// StopAPIServer stops kube-apiserver as the kubelet stops a static pod: SIGTERM, then
// SIGKILL once grace has passed (kube-apiserver stops listening at once but keeps open
// watches for up to a minute), and returns when the process is gone. etcd keeps
// running. Every client of the control plane, the components under test included,
// loses its API server; StartAPIServer brings it back.
func (e *Env) StopAPIServer(grace time.Duration) error {
	pid, err := e.apiServerPID()
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal kube-apiserver: %w", err)
	}
	if Poll("kube-apiserver to exit", grace, func() (bool, string) { return !running(pid), "" }) != nil {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill kube-apiserver: %w", err)
		}
	}
	// The process has exited or is being killed: envtest reaps it and forgets it. If
	// envtest had reaped it but not yet noted the exit, its signal finds no process:
	// the second Stop sees the exit.
	if err := e.env.ControlPlane.APIServer.Stop(); err != nil {
		if err := e.env.ControlPlane.APIServer.Stop(); err != nil {
			return fmt.Errorf("stop kube-apiserver: %w", err)
		}
	}
	return nil
}

// apiServerPID finds the kube-apiserver serving from this environment's certificate
// directory (envtest keeps its process to itself), from /proc.
func (e *Env) apiServerPID() (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("find kube-apiserver (needs /proc): %w", err)
	}
	want := "--cert-dir=" + e.certDir
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if filepath.Base(args[0]) == "kube-apiserver" && slices.Contains(args, want) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no kube-apiserver process with %s", want)
}

// running is false once the process has exited (gone, or a zombie not yet reaped).
func running(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses: "pid (comm) S ..."; the name
	// may itself hold ") ", so the last one counts.
	i := strings.LastIndex(string(stat), ") ")
	return i >= 0 && !strings.HasPrefix(string(stat)[i+2:], "Z")
}

// StartAPIServer starts the stopped kube-apiserver again on the same address with the
// same certificates and client CA, so clients configured before the stop reconnect
// without a change, and returns once it reports healthy.
func (e *Env) StartAPIServer() error {
	if err := e.env.ControlPlane.APIServer.Start(); err != nil {
		return fmt.Errorf("start kube-apiserver again: %w", err)
	}
	return nil
}

// SecondAPIServer starts another kube-apiserver on the same etcd, as the other member
// of a highly available control plane, and returns a cluster-admin client for it and a
// function that stops it. Changes made through it are what the clients of a stopped
// first API server must catch up with when it returns.
func (e *Env) SecondAPIServer() (client.Client, func() error, error) {
	first := e.env.ControlPlane.APIServer
	second := &envtest.APIServer{EtcdURL: e.env.ControlPlane.Etcd.URL, Path: first.Path,
		StartTimeout: first.StartTimeout, StopTimeout: first.StopTimeout}
	if err := second.Start(); err != nil {
		return nil, nil, fmt.Errorf("start a second kube-apiserver: %w", err)
	}
	stop := func() error {
		if err := second.Stop(); err != nil {
			return fmt.Errorf("stop the second kube-apiserver: %w", err)
		}
		return nil
	}
	base := &rest.Config{Host: second.SecureServing.URL("https", "").String(),
		TLSClientConfig: rest.TLSClientConfig{CAData: second.CA}}
	cfg, err := second.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, base)
	if err != nil {
		_ = stop()
		return nil, nil, fmt.Errorf("admin user of the second kube-apiserver: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: e.Scheme})
	if err != nil {
		_ = stop()
		return nil, nil, fmt.Errorf("client of the second kube-apiserver: %w", err)
	}
	return c, stop, nil
}
