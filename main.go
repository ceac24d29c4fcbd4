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

// Command servicekey-operator is the one binary of the project. Its subcommands are
// the controller (issues ServiceKeys' key pairs), the token server, and a token CLI;
// main only parses flags and wires components together.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/go-logr/logr"
	uberzap "go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	authv1alpha1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/controllers"
)

const usage = `Usage: servicekey-operator <command> [flags]

Commands:
  controller     run the ServiceKey controller (key pairs, Secrets, status)
  token-server   run the OAuth 2.0 token server (RFC 7523 grants -> RFC 9068 access tokens)
  token          print an access token for a key file (like gcloud auth print-access-token)

Run 'servicekey-operator <command> -h' for a command's flags.
`

// exitUsage is the exit code for a command line that cannot be understood.
const exitUsage = 2

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "controller":
		return runServer("controller", args[1:], stderr, parseControllerFlags, runController)
	case "token-server":
		return runServer("token-server", args[1:], stderr, parseTokenServerFlags, serveTokens)
	case "token":
		return runToken(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stderr, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
}

// runServer runs a long-running subcommand: parse its flags (exit 0 for -h, 2 for a
// command line it cannot use), install the logger, and serve until stopped (exit 1
// when it stops with an error).
func runServer[F interface{ logger(string) logr.Logger }](name string, args []string, stderr io.Writer,
	parse func([]string, io.Writer) (F, error), serve func(F, logr.Logger) error) int {
	f, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitUsage
	}
	log := f.logger(name)
	if err := serve(f, log); err != nil {
		log.Error(err, name+" stopped")
		return 1
	}
	return 0
}

// parseRef reads a namespace/name flag value.
func parseRef(flagName, value string) (types.NamespacedName, error) {
	ns, name, ok := strings.Cut(value, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return types.NamespacedName{}, fmt.Errorf("%s must be namespace/name, got %q", flagName, value)
	}
	return types.NamespacedName{Namespace: ns, Name: name}, nil
}

// common are the flags of both servers: where the API server is, and logging.
type common struct {
	kubeconfig string
	kubeAPI    apiLimits
	pprofAddr  string
	zapOpts    zap.Options
}

// apiLimits is the client-side rate limit towards the API server.
type apiLimits struct {
	qps   float64
	burst int
}

func (c *common) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "path to a kubeconfig; default: $KUBECONFIG, in-cluster config, ~/.kube/config")
	fs.Float64Var(&c.kubeAPI.qps, "kube-api-qps", 0, "client-side limit of API requests per second; 0: none, the API server's priority and fairness applies")
	fs.IntVar(&c.kubeAPI.burst, "kube-api-burst", 0, "burst of --kube-api-qps; 0: twice the QPS")
	fs.StringVar(&c.pprofAddr, "pprof-bind-address", "", "address of Go's /debug/pprof profiles (heap, CPU), e.g. 127.0.0.1:6060; empty: off")
	c.zapOpts.BindFlags(fs)
}

// logger installs the process logger, its verbosity capped at V(MaxLogVerbosity),
// and returns a named one.
func (c *common) logger(name string) logr.Logger {
	clamped := capVerbosity(&c.zapOpts, controllers.MaxLogVerbosity)
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&c.zapOpts)))
	log := ctrl.Log.WithName(name)
	if clamped {
		log.Info("log verbosity capped: client-go logs request bodies, which include private keys, above this level",
			"maxVerbosity", controllers.MaxLogVerbosity)
	}
	return log
}

// capVerbosity lowers a --zap-log-level more verbose than V(max) to V(max) and says
// whether it did.
func capVerbosity(opts *zap.Options, maxV int8) bool {
	lvl, ok := opts.Level.(uberzap.AtomicLevel)
	if !ok || lvl.Level() >= zapcore.Level(-maxV) {
		return false
	}
	lvl.SetLevel(zapcore.Level(-maxV))
	return true
}

// newScheme knows core types and ServiceKeys.
func newScheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register core types: %w", err)
	}
	if err := authv1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register ServiceKey types: %w", err)
	}
	return scheme, nil
}

// restConfig loads the kubeconfig from --kubeconfig when given, otherwise from the
// usual places ($KUBECONFIG, in-cluster, ~/.kube/config) as kubectl does, and applies
// the same client-side rate limit whatever the source: client-go's default of 5
// requests/s (what a kubeconfig file alone yields) made 200 ServiceKeys take 3 times
// as long through --kubeconfig as through $KUBECONFIG.
func restConfig(path string, limits apiLimits) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if path != "" {
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: path}, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
		}
	} else if cfg, err = ctrl.GetConfig(); err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = limits.rest()
	return cfg, nil
}

// check refuses limits client-go would misread.
func (l apiLimits) check() error {
	if math.IsNaN(l.qps) || math.IsInf(l.qps, 0) || l.qps < 0 || l.burst < 0 {
		return fmt.Errorf("--kube-api-qps and --kube-api-burst must be finite and not negative, got %v and %d", l.qps, l.burst)
	}
	return nil
}

// rest turns the flags into rest.Config's QPS and Burst; a negative QPS is how
// client-go is told to leave rate limiting to the API server.
func (l apiLimits) rest() (float32, int) {
	if l.qps <= 0 {
		return -1, 0
	}
	burst := l.burst
	if burst <= 0 {
		burst = max(1, int(2*l.qps))
	}
	return float32(l.qps), burst
}
