package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	monv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const k8sDir = "kubernetes"

// gorn's defaults for the flags the invariants read (config/ registry).
const (
	defaultGracefulTimeout = 30
	defaultShutdownDelay   = 0
	defaultGracePeriod     = 30 // Kubernetes' terminationGracePeriodSeconds
)

// kustomization is the part of kustomize's Kustomization the base uses; decoding is strict,
// so a field outside it is an error here, not silently ignored.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels"`
}

// adapterConfig is prometheus-adapter's rule file (the fields the base uses).
type adapterConfig struct {
	Rules []adapterRule `json:"rules"`
}

type adapterRule struct {
	SeriesQuery string `json:"seriesQuery"`
	Resources   struct {
		Overrides map[string]struct {
			Resource string `json:"resource"`
		} `json:"overrides"`
	} `json:"resources"`
	Name struct {
		Matches string `json:"matches"`
		As      string `json:"as"`
	} `json:"name"`
	MetricsQuery string `json:"metricsQuery"`
}

// base is every object of deploy/kubernetes, decoded into its API type.
type base struct {
	kustomization kustomization
	deployment    *appsv1.Deployment
	service       *corev1.Service
	pdb           *policyv1.PodDisruptionBudget
	podMonitor    *monv1.PodMonitor
	hpa           *autoscalingv2.HorizontalPodAutoscaler
	adapter       adapterConfig
}

// decodeStrict decodes YAML into v, rejecting unknown and duplicate fields.
func decodeStrict(data []byte, v any) error {
	return yaml.UnmarshalStrict(data, v)
}

// loadBase reads and strictly decodes every manifest; a file or kind it does not expect is
// an error, so a new manifest cannot slip past the tests.
func loadBase(t *testing.T) *base {
	t.Helper()
	var b base
	data, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeStrict(data, &b.kustomization); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		if name == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte("\n---")) {
			t.Fatalf("%s: one object per file, please", name)
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(data, &meta); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var obj any
		switch meta.APIVersion + " " + meta.Kind {
		case "apps/v1 Deployment":
			b.deployment = new(appsv1.Deployment)
			obj = b.deployment
		case "v1 Service":
			b.service = new(corev1.Service)
			obj = b.service
		case "policy/v1 PodDisruptionBudget":
			b.pdb = new(policyv1.PodDisruptionBudget)
			obj = b.pdb
		case "monitoring.coreos.com/v1 PodMonitor":
			b.podMonitor = new(monv1.PodMonitor)
			obj = b.podMonitor
		case "autoscaling/v2 HorizontalPodAutoscaler":
			b.hpa = new(autoscalingv2.HorizontalPodAutoscaler)
			obj = b.hpa
		case "v1 ConfigMap":
			var cm corev1.ConfigMap
			if err := decodeStrict(data, &cm); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if err := decodeStrict([]byte(cm.Data["config.yaml"]), &b.adapter); err != nil {
				t.Fatalf("%s: config.yaml: %v", name, err)
			}
			continue
		default:
			t.Fatalf("%s: unexpected object %s %s", name, meta.APIVersion, meta.Kind)
		}
		if err := decodeStrict(data, obj); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name != "prometheus-adapter.yaml" && !slices.Contains(b.kustomization.Resources, name) {
			t.Errorf("%s is not among kustomization.yaml's resources", name)
		}
	}
	for _, r := range b.kustomization.Resources {
		if _, err := os.Stat(filepath.Join(k8sDir, r)); err != nil {
			t.Errorf("kustomization.yaml lists %s: %v", r, err)
		}
	}
	if b.deployment == nil || b.service == nil || b.pdb == nil || b.podMonitor == nil || b.hpa == nil || b.adapter.Rules == nil {
		t.Fatalf("the base lacks an object: %+v", b)
	}
	return &b
}

// flagValue returns the value of a long flag in args ("--name=v" or "--name v").
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

func secondsFlag(args []string, name string, def int) (int, error) {
	v, ok := flagValue(args, name)
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, fmt.Errorf("--%s %q: %w", name, v, err)
	}
	return int(n + 0.999), nil
}

// portOf returns the port number of a --bind/--metrics-bind HOST:PORT value.
func portOf(addr string) (int32, error) {
	i := strings.LastIndexByte(addr, ':')
	n, err := strconv.Atoi(addr[i+1:])
	if i < 0 || err != nil {
		return 0, fmt.Errorf("address %q has no port", addr)
	}
	return int32(n), nil
}

func (b *base) app() (*corev1.Container, error) {
	cs := b.deployment.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		return nil, fmt.Errorf("want one container in the pod, have %d", len(cs))
	}
	if len(cs[0].Command) == 0 || cs[0].Command[0] != "gorn" {
		return nil, fmt.Errorf("the container runs %q, not gorn", cs[0].Command)
	}
	return &cs[0], nil
}

// containerPort finds a container port by name (or number, for an int target).
func containerPort(c *corev1.Container, p intstr.IntOrString) (*corev1.ContainerPort, error) {
	for i := range c.Ports {
		cp := &c.Ports[i]
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, nil
		}
	}
	return nil, fmt.Errorf("port %s is not a port of container %s", p.String(), c.Name)
}

// The invariants. Each returns why the base breaks it, or nil.

func checkShutdown(b *base) error {
	c, err := b.app()
	if err != nil {
		return err
	}
	graceful, err := secondsFlag(c.Args, "graceful-timeout", defaultGracefulTimeout)
	if err != nil {
		return err
	}
	delay, err := secondsFlag(c.Args, "shutdown-delay", defaultShutdownDelay)
	if err != nil {
		return err
	}
	preStop := 0
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		if s := c.Lifecycle.PreStop.Sleep; s != nil {
			preStop = int(s.Seconds)
		} else {
			return errors.New("preStop other than sleep: use --shutdown-delay (no shell in the image)")
		}
	}
	if preStop+delay == 0 {
		return errors.New("neither --shutdown-delay nor a preStop sleep: connections are reset while the endpoint removal propagates")
	}
	grace := int64(defaultGracePeriod)
	if g := b.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = *g
	}
	if int(grace) <= preStop+delay+graceful {
		return fmt.Errorf("terminationGracePeriodSeconds %d must exceed preStop %d + --shutdown-delay %d + --graceful-timeout %d", grace, preStop, delay, graceful)
	}
	if s := b.deployment.Spec.Strategy.RollingUpdate; s == nil || s.MaxUnavailable == nil || s.MaxUnavailable.IntValue() != 0 {
		return errors.New("a rolling update must not take a pod away before its replacement is ready (maxUnavailable: 0)")
	}
	return nil
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "<unset>"
	}
	return fmt.Sprint(*p)
}

// boundPort returns gorn's container and the port of its address flag (bind or
// metrics-bind); missing says why the flag cannot be left out.
func (b *base) boundPort(flag, missing string) (*corev1.Container, int32, error) {
	c, err := b.app()
	if err != nil {
		return nil, 0, err
	}
	addr, ok := flagValue(c.Args, flag)
	if !ok {
		return nil, 0, fmt.Errorf("no --%s: %s", flag, missing)
	}
	port, err := portOf(addr)
	return c, port, err
}

func checkProbes(b *base) error {
	c, metricsPort, err := b.boundPort("metrics-bind", "no /metrics, /healthz or /readyz")
	if err != nil {
		return err
	}
	mp, err := containerPort(c, intstr.FromString("metrics"))
	if err != nil {
		return fmt.Errorf("the metrics port must be named: %w", err)
	}
	if mp.ContainerPort != metricsPort {
		return fmt.Errorf("port metrics is %d, --metrics-bind listens on %d", mp.ContainerPort, metricsPort)
	}
	for _, pr := range []struct {
		kind  string
		probe *corev1.Probe
		path  string
	}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			return fmt.Errorf("%s: want an httpGet probe of %s", pr.kind, pr.path)
		}
		if pr.probe.HTTPGet.Path != pr.path {
			return fmt.Errorf("%s: path %s, want %s", pr.kind, pr.probe.HTTPGet.Path, pr.path)
		}
		p, err := containerPort(c, pr.probe.HTTPGet.Port)
		if err != nil {
			return fmt.Errorf("%s: %w", pr.kind, err)
		}
		if p.ContainerPort != metricsPort {
			return fmt.Errorf("%s: port %d is not the metrics port %d (the app's port queues behind busy workers)", pr.kind, p.ContainerPort, metricsPort)
		}
	}
	return nil
}

func checkPorts(b *base) error {
	c, httpPort, err := b.boundPort("bind", "gorn would listen on 127.0.0.1, unreachable from the Service")
	if err != nil {
		return err
	}
	for _, sp := range b.service.Spec.Ports {
		p, err := containerPort(c, sp.TargetPort)
		if err != nil {
			return fmt.Errorf("Service port %s: %w", sp.Name, err)
		}
		if p.ContainerPort != httpPort {
			return fmt.Errorf("Service port %s targets %d, gorn listens on %d", sp.Name, p.ContainerPort, httpPort)
		}
	}
	for _, ep := range b.podMonitor.Spec.PodMetricsEndpoints {
		if ep.Port == nil {
			return errors.New("PodMonitor endpoint without a port name")
		}
		if _, err := containerPort(c, intstr.FromString(*ep.Port)); err != nil {
			return fmt.Errorf("PodMonitor: %w", err)
		}
		if *ep.Port != "metrics" || ep.Path != "/metrics" {
			return fmt.Errorf("PodMonitor scrapes %s on port %s, want /metrics on port metrics", ep.Path, *ep.Port)
		}
	}
	return nil
}

func checkSelectors(b *base) error {
	pod := labels.Set(b.deployment.Spec.Template.Labels)
	matches := func(what string, sel *metav1.LabelSelector) error {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return fmt.Errorf("%s selector: %w", what, err)
		}
		if s.Empty() || !s.Matches(pod) {
			return fmt.Errorf("%s selector %s does not select the pods (%s)", what, s, pod)
		}
		return nil
	}
	if err := matches("Deployment", b.deployment.Spec.Selector); err != nil {
		return err
	}
	if err := matches("PodDisruptionBudget", b.pdb.Spec.Selector); err != nil {
		return err
	}
	if err := matches("PodMonitor", &b.podMonitor.Spec.Selector); err != nil {
		return err
	}
	svc := labels.SelectorFromSet(b.service.Spec.Selector)
	if len(b.service.Spec.Selector) == 0 || !svc.Matches(pod) {
		return fmt.Errorf("Service selector %s does not select the pods (%s)", svc, pod)
	}
	return nil
}

func checkResources(b *base) error {
	c, err := b.app()
	if err != nil {
		return err
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[name]
		limit, okLimit := c.Resources.Limits[name]
		if !okReq || !okLimit {
			return fmt.Errorf("%s: want a request and a limit", name)
		}
		if limit.Cmp(req) < 0 {
			return fmt.Errorf("%s: limit %s below request %s", name, limit.String(), req.String())
		}
	}
	return nil
}

// downwardRef matches a GORN_CPUS value built from an env var: "$(NAME)m".
var downwardRef = regexp.MustCompile(`^\$\(([A-Za-z_][A-Za-z0-9_]*)\)m$`)

func checkGornCPUs(b *base) error {
	c, err := b.app()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GORN_CPUS" })
	if i < 0 {
		return errors.New("no GORN_CPUS: without a CPU limit gorn sizes for every CPU of the node")
	}
	m := downwardRef.FindStringSubmatch(c.Env[i].Value)
	if m == nil {
		return fmt.Errorf("GORN_CPUS=%q: want $(VAR)m, VAR the CPU request in millicores", c.Env[i].Value)
	}
	// $(VAR) expands only from a variable defined before it.
	j := slices.IndexFunc(c.Env[:i], func(e corev1.EnvVar) bool { return e.Name == m[1] })
	if j < 0 {
		return fmt.Errorf("GORN_CPUS refers to %s, which is not defined before it", m[1])
	}
	ref := c.Env[j].ValueFrom
	if ref == nil || ref.ResourceFieldRef == nil {
		return fmt.Errorf("%s does not come from the Downward API", m[1])
	}
	r := ref.ResourceFieldRef
	if r.Resource != "requests.cpu" {
		return fmt.Errorf("%s is %s, want requests.cpu", m[1], r.Resource)
	}
	if r.Divisor.Cmp(resource.MustParse("1m")) != 0 {
		return fmt.Errorf("%s has divisor %s: the m suffix of GORN_CPUS needs 1m", m[1], r.Divisor.String())
	}
	if r.ContainerName != "" && r.ContainerName != c.Name {
		return fmt.Errorf("%s reads container %s's request, not %s's", m[1], r.ContainerName, c.Name)
	}
	return nil
}

func checkSecurity(b *base) error {
	c, err := b.app()
	if err != nil {
		return err
	}
	pod := b.deployment.Spec.Template.Spec.SecurityContext
	nonRoot := pod != nil && pod.RunAsNonRoot != nil && *pod.RunAsNonRoot
	if sc := c.SecurityContext; sc != nil && sc.RunAsNonRoot != nil {
		nonRoot = *sc.RunAsNonRoot
	}
	if !nonRoot {
		return errors.New("runAsNonRoot is not set")
	}
	if pod == nil || pod.RunAsUser == nil || *pod.RunAsUser == 0 {
		return errors.New("runAsUser must name a non-root uid (the image's USER may be a name, which runAsNonRoot cannot check)")
	}
	if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
		return errors.New("readOnlyRootFilesystem is not set: gorn writes nothing to disk")
	}
	return nil
}

func checkAutoscaling(b *base) error {
	h := b.hpa
	ref := h.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.Name != b.deployment.Name || ref.APIVersion != "apps/v1" {
		return fmt.Errorf("the HPA scales %s %s, not the Deployment %s", ref.Kind, ref.Name, b.deployment.Name)
	}
	if b.deployment.Spec.Replicas != nil {
		return errors.New("the Deployment sets replicas: every apply would undo the HPA's count")
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 {
		return fmt.Errorf("minReplicas %s: with one pod, a drain or a crash leaves none", ptrString(h.Spec.MinReplicas))
	}
	if mu := b.pdb.Spec.MaxUnavailable; mu == nil || mu.IntValue() >= int(*h.Spec.MinReplicas) {
		return errors.New("the PodDisruptionBudget lets a drain take every pod at minReplicas")
	}
	var cpu, gorn bool
	for _, m := range h.Spec.Metrics {
		switch {
		case m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU:
			cpu = m.Resource.Target.Type == autoscalingv2.UtilizationMetricType && m.Resource.Target.AverageUtilization != nil
		case m.Type == autoscalingv2.PodsMetricSourceType && m.Pods != nil:
			name := m.Pods.Metric.Name
			if !slices.ContainsFunc(b.adapter.Rules, func(r adapterRule) bool { return r.Name.As == name }) {
				return fmt.Errorf("the HPA scales on %s, which no prometheus-adapter rule provides", name)
			}
			if m.Pods.Target.AverageValue == nil {
				return fmt.Errorf("the HPA's %s target needs an averageValue", name)
			}
			gorn = true
		}
	}
	if !cpu || !gorn {
		return fmt.Errorf("the HPA must scale on CPU utilization (%v) and on a gorn metric (%v)", cpu, gorn)
	}
	for _, r := range b.adapter.Rules {
		if !strings.Contains(r.SeriesQuery, `namespace!=""`) || !strings.Contains(r.SeriesQuery, `pod!=""`) ||
			r.Resources.Overrides["pod"].Resource != "pod" || r.Resources.Overrides["namespace"].Resource != "namespace" {
			return fmt.Errorf("adapter rule %s: series must carry namespace and pod labels mapped to those resources", r.Name.As)
		}
		if !strings.Contains(r.MetricsQuery, "<<.LabelMatchers>>") || !strings.Contains(r.MetricsQuery, "by (<<.GroupBy>>)") {
			return fmt.Errorf("adapter rule %s: the query must select <<.LabelMatchers>> and group by <<.GroupBy>>", r.Name.As)
		}
	}
	return nil
}

var invariants = map[string]func(*base) error{
	"shutdown":    checkShutdown,
	"probes":      checkProbes,
	"ports":       checkPorts,
	"selectors":   checkSelectors,
	"resources":   checkResources,
	"GORN_CPUS":   checkGornCPUs,
	"security":    checkSecurity,
	"autoscaling": checkAutoscaling,
}

func TestKubernetesBaseHoldsInvariants(t *testing.T) {
	b := loadBase(t)
	for name, check := range invariants {
		if err := check(b); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestKubernetesBrokenVariantsAreRejected breaks each invariant in a fresh copy of the base
// and expects its check to say so: the checks can fail.
func TestKubernetesBrokenVariantsAreRejected(t *testing.T) {
	app := func(b *base) *corev1.Container { return &b.deployment.Spec.Template.Spec.Containers[0] }
	setArg := func(b *base, name, value string) {
		c := app(b)
		c.Args = slices.DeleteFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--"+name+"=") })
		if value != "" {
			c.Args = append([]string{"--" + name + "=" + value}, c.Args...)
		}
	}
	env := func(b *base, name string) *corev1.EnvVar {
		c := app(b)
		i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
		if i < 0 {
			t.Fatalf("no env %s in the base", name)
		}
		return &c.Env[i]
	}
	for _, tc := range []struct {
		invariant, name string
		breakIt         func(b *base)
		want            string
	}{
		{"shutdown", "grace period too short", func(b *base) {
			g := int64(30)
			b.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds = &g
		}, "must exceed"},
		{"shutdown", "graceful timeout raised past the grace period", func(b *base) { setArg(b, "graceful-timeout", "60") }, "must exceed"},
		{"shutdown", "grace period left at Kubernetes' default", func(b *base) { b.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds = nil }, "terminationGracePeriodSeconds 30 must exceed"},
		{"shutdown", "preStop sleep added on top", func(b *base) {
			app(b).Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 15}}}
		}, "must exceed"},
		{"shutdown", "no shutdown delay", func(b *base) { setArg(b, "shutdown-delay", "") }, "neither --shutdown-delay"},
		{"shutdown", "surge-less rollout", func(b *base) {
			mu := intstr.FromInt32(1)
			b.deployment.Spec.Strategy.RollingUpdate.MaxUnavailable = &mu
		}, "maxUnavailable: 0"},
		{"probes", "no metrics server", func(b *base) { setArg(b, "metrics-bind", "") }, "no --metrics-bind"},
		{"probes", "metrics port unnamed", func(b *base) { app(b).Ports[1].Name = "" }, "must be named"},
		{"probes", "metrics port differs from --metrics-bind", func(b *base) { setArg(b, "metrics-bind", "0.0.0.0:9999") }, "--metrics-bind listens on 9999"},
		{"probes", "readiness on /healthz", func(b *base) { app(b).ReadinessProbe.HTTPGet.Path = "/healthz" }, "want /readyz"},
		{"probes", "liveness on /readyz", func(b *base) { app(b).LivenessProbe.HTTPGet.Path = "/readyz" }, "want /healthz"},
		{"probes", "liveness on a missing port", func(b *base) { app(b).LivenessProbe.HTTPGet.Port = intstr.FromString("admin") }, "port admin is not a port"},
		{"probes", "readiness on the app port", func(b *base) { app(b).ReadinessProbe.HTTPGet.Port = intstr.FromString("http") }, "is not the metrics port"},
		{"ports", "Service targets a missing port", func(b *base) { b.service.Spec.Ports[0].TargetPort = intstr.FromString("web") }, "port web is not a port"},
		{"ports", "gorn binds elsewhere", func(b *base) { setArg(b, "bind", "0.0.0.0:8080") }, "gorn listens on 8080"},
		{"ports", "gorn binds loopback by default", func(b *base) { setArg(b, "bind", "") }, "no --bind"},
		{"ports", "PodMonitor scrapes the app port", func(b *base) {
			p := "http"
			b.podMonitor.Spec.PodMetricsEndpoints[0].Port = &p
		}, "want /metrics on port metrics"},
		{"selectors", "Service selects nothing", func(b *base) { b.service.Spec.Selector = map[string]string{"app": "other"} }, "Service selector"},
		{"selectors", "PDB selects nothing", func(b *base) { b.pdb.Spec.Selector.MatchLabels = map[string]string{"app": "other"} }, "PodDisruptionBudget selector"},
		{"selectors", "PodMonitor selects nothing", func(b *base) {
			b.podMonitor.Spec.Selector.MatchLabels = map[string]string{"app": "other"}
		}, "PodMonitor selector"},
		{"resources", "no memory limit", func(b *base) { delete(app(b).Resources.Limits, corev1.ResourceMemory) }, "memory: want a request and a limit"},
		{"resources", "no CPU request", func(b *base) { delete(app(b).Resources.Requests, corev1.ResourceCPU) }, "cpu: want a request and a limit"},
		{"resources", "limit below request", func(b *base) { app(b).Resources.Limits[corev1.ResourceCPU] = resource.MustParse("500m") }, "below request"},
		{"GORN_CPUS", "missing", func(b *base) {
			c := app(b)
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GORN_CPUS" })
		}, "no GORN_CPUS"},
		{"GORN_CPUS", "without the m suffix", func(b *base) { env(b, "GORN_CPUS").Value = "$(CPU_REQUEST)" }, "want $(VAR)m"},
		{"GORN_CPUS", "divisor 1", func(b *base) { env(b, "CPU_REQUEST").ValueFrom.ResourceFieldRef.Divisor = resource.MustParse("1") }, "needs 1m"},
		{"GORN_CPUS", "from the limit", func(b *base) { env(b, "CPU_REQUEST").ValueFrom.ResourceFieldRef.Resource = "limits.cpu" }, "want requests.cpu"},
		{"GORN_CPUS", "defined after use", func(b *base) {
			c := app(b)
			c.Env[0], c.Env[1] = c.Env[1], c.Env[0]
		}, "not defined before it"},
		{"security", "root allowed", func(b *base) { b.deployment.Spec.Template.Spec.SecurityContext.RunAsNonRoot = nil }, "runAsNonRoot"},
		{"security", "uid 0", func(b *base) {
			var root int64
			b.deployment.Spec.Template.Spec.SecurityContext.RunAsUser = &root
		}, "runAsUser"},
		{"security", "writable root", func(b *base) { app(b).SecurityContext.ReadOnlyRootFilesystem = nil }, "readOnlyRootFilesystem"},
		{"autoscaling", "HPA on another Deployment", func(b *base) { b.hpa.Spec.ScaleTargetRef.Name = "other" }, "not the Deployment"},
		{"autoscaling", "replicas set", func(b *base) {
			r := int32(3)
			b.deployment.Spec.Replicas = &r
		}, "sets replicas"},
		{"autoscaling", "one replica", func(b *base) {
			r := int32(1)
			b.hpa.Spec.MinReplicas = &r
		}, "minReplicas 1"},
		{"autoscaling", "metric nobody provides", func(b *base) {
			for i := range b.hpa.Spec.Metrics {
				if p := b.hpa.Spec.Metrics[i].Pods; p != nil {
					p.Metric.Name = "gorn_busy_ratio"
				}
			}
		}, "no prometheus-adapter rule"},
		{"autoscaling", "CPU only", func(b *base) {
			b.hpa.Spec.Metrics = slices.DeleteFunc(b.hpa.Spec.Metrics, func(m autoscalingv2.MetricSpec) bool { return m.Pods != nil })
		}, "and on a gorn metric (false)"},
		{"autoscaling", "adapter rule without pod labels", func(b *base) { b.adapter.Rules[0].SeriesQuery = "gorn_workers" }, "namespace and pod labels"},
		{"autoscaling", "adapter query not grouped", func(b *base) {
			b.adapter.Rules[0].MetricsQuery = strings.ReplaceAll(b.adapter.Rules[0].MetricsQuery, "by (<<.GroupBy>>)", "")
		}, "group by"},
		{"autoscaling", "PDB allows draining every pod", func(b *base) {
			mu := intstr.FromInt32(2)
			b.pdb.Spec.MaxUnavailable = &mu
		}, "every pod at minReplicas"},
	} {
		t.Run(tc.invariant+"/"+tc.name, func(t *testing.T) {
			b := loadBase(t)
			tc.breakIt(b)
			err := invariants[tc.invariant](b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestKubernetesStrictDecoding: a misspelt field is an error, not a silently ignored key.
func TestKubernetesStrictDecoding(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(k8sDir, "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(data, []byte("terminationGracePeriodSeconds:"), []byte("terminationGracePeriod:"), 1)
	if bytes.Equal(bad, data) {
		t.Fatal("deployment.yaml has no terminationGracePeriodSeconds to misspell")
	}
	var d appsv1.Deployment
	if err := decodeStrict(bad, &d); err == nil || !strings.Contains(err.Error(), "terminationGracePeriod") {
		t.Fatalf("a misspelt field decoded: %v", err)
	}
}
