package main

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"
)

// The deploy tests check deploy/ statically, because no container engine or
// cluster runs in CI. Every manifest parses, and the Kubernetes objects fit
// together and with the service. Every metric that an alert or a dashboard
// panel names exists in a scrape of the real binary.

const opsDeployDir = "../../deploy"

// opsYAMLDocs decodes every YAML document of a file.
func opsYAMLDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	var docs []map[string]any
	dec := yaml.NewDecoder(f)
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("parse %s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// opsDig returns the value at a path of map keys and list indexes.
func opsDig(v any, path ...any) any {
	for _, p := range path {
		switch key := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[key]
		case int:
			l, ok := v.([]any)
			if !ok || key >= len(l) {
				return nil
			}
			v = l[key]
		}
	}
	return v
}

// opsKind returns the first document of kind in docs.
func opsKind(t *testing.T, docs []map[string]any, kind string) map[string]any {
	t.Helper()
	for _, d := range docs {
		if d["kind"] == kind {
			return d
		}
	}
	t.Fatalf("no %s manifest", kind)
	return nil
}

func TestDeployFilesParse(t *testing.T) {
	var files []string
	err := filepath.WalkDir(opsDeployDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(opsDeployDir, path)
		files = append(files, filepath.ToSlash(rel))
		switch filepath.Ext(path) {
		case ".yaml", ".yml":
			if len(opsYAMLDocs(t, path)) == 0 {
				t.Errorf("%s holds no YAML document", rel)
			}
		case ".json":
			raw, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				t.Errorf("parse %s: %v", rel, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", opsDeployDir, err)
	}
	for _, want := range []string{
		"Dockerfile", "compose.yaml", "grafana/taskpod-billing.json",
		"kubernetes/deployment.yaml", "kubernetes/service.yaml", "kubernetes/servicemonitor.yaml",
		"kubernetes/prometheusrule.yaml", "prometheus/alerts.yaml", "prometheus/alerts_test.yaml",
	} {
		if !slices.Contains(files, want) {
			t.Errorf("deploy/%s is missing", want)
		}
	}
}

// opsKnownEnv reports whether billingd reads the environment variable.
func opsKnownEnv(name string) bool {
	if name == "EMULATOR_WEBHOOK_URL" {
		return true // read by the emulator, outside Config
	}
	for _, s := range envSpecs {
		if s.Name == name {
			return true
		}
	}
	return false
}

func TestDeployKubernetesManifests(t *testing.T) {
	docs := opsYAMLDocs(t, filepath.Join(opsDeployDir, "kubernetes/deployment.yaml"))
	deployment := opsKind(t, docs, "Deployment")
	pdb := opsKind(t, docs, "PodDisruptionBudget")
	service := opsKind(t, opsYAMLDocs(t, filepath.Join(opsDeployDir, "kubernetes/service.yaml")), "Service")
	monitor := opsKind(t, opsYAMLDocs(t, filepath.Join(opsDeployDir, "kubernetes/servicemonitor.yaml")), "ServiceMonitor")

	podLabels, _ := opsDig(deployment, "spec", "template", "metadata", "labels").(map[string]any)
	selects := func(what string, selector any, labels map[string]any) {
		sel, _ := selector.(map[string]any)
		if len(sel) == 0 {
			t.Errorf("%s has an empty selector", what)
		}
		for k, v := range sel {
			if labels[k] != v {
				t.Errorf("%s selects %s=%v, which the labels %v lack", what, k, v, labels)
			}
		}
	}
	selects("Deployment", opsDig(deployment, "spec", "selector", "matchLabels"), podLabels)
	selects("PodDisruptionBudget", opsDig(pdb, "spec", "selector", "matchLabels"), podLabels)
	selects("Service", opsDig(service, "spec", "selector"), podLabels)
	serviceLabels, _ := opsDig(service, "metadata", "labels").(map[string]any)
	selects("ServiceMonitor", opsDig(monitor, "spec", "selector", "matchLabels"), serviceLabels)

	container := opsDig(deployment, "spec", "template", "spec", "containers", 0)
	if port := opsDig(container, "ports", 0, "name"); port != "http" {
		t.Errorf("container port name = %v, want http", port)
	}
	for probe, path := range map[string]string{"livenessProbe": "/livez", "readinessProbe": "/readyz", "startupProbe": "/livez"} {
		if got := opsDig(container, probe, "httpGet", "path"); got != path {
			t.Errorf("%s path = %v, want %s", probe, got, path)
		}
		if got := opsDig(container, probe, "httpGet", "port"); got != "http" {
			t.Errorf("%s port = %v, want http", probe, got)
		}
	}
	for _, kind := range []string{"requests", "limits"} {
		for _, res := range []string{"cpu", "memory"} {
			if opsDig(container, "resources", kind, res) == nil {
				t.Errorf("container has no %s %s", res, kind)
			}
		}
	}
	if opsDig(deployment, "spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
		t.Errorf("pod does not set runAsNonRoot")
	}

	env := map[string]any{}
	for _, e := range opsDig(container, "env").([]any) {
		name, _ := opsDig(e, "name").(string)
		if !opsKnownEnv(name) {
			t.Errorf("Deployment sets %s, which billingd does not read", name)
		}
		env[name] = opsDig(e, "value")
	}
	if env["LISTEN_ADDR"] != "0.0.0.0:8080" {
		t.Errorf("LISTEN_ADDR = %v, want 0.0.0.0:8080 so the kubelet and the Service reach the pod", env["LISTEN_ADDR"])
	}
	timeout, err := time.ParseDuration(env["SHUTDOWN_TIMEOUT"].(string))
	if err != nil {
		t.Fatalf("SHUTDOWN_TIMEOUT: %v", err)
	}
	grace, _ := opsDig(deployment, "spec", "template", "spec", "terminationGracePeriodSeconds").(int)
	if time.Duration(grace)*time.Second <= timeout {
		t.Errorf("terminationGracePeriodSeconds %d does not exceed SHUTDOWN_TIMEOUT %s, so the kubelet kills a draining pod", grace, timeout)
	}

	if got := opsDig(service, "spec", "ports", 0, "name"); got != "http" {
		t.Errorf("Service port name = %v, want http", got)
	}
	if got := opsDig(monitor, "spec", "endpoints", 0, "port"); got != opsDig(service, "spec", "ports", 0, "name") {
		t.Errorf("ServiceMonitor scrapes port %v, which the Service does not name", got)
	}
	if got := opsDig(monitor, "spec", "endpoints", 0, "path"); got != "/metrics" {
		t.Errorf("ServiceMonitor path = %v, want /metrics", got)
	}
}

func TestDeployPrometheusRuleMatchesAlerts(t *testing.T) {
	alerts := opsYAMLDocs(t, filepath.Join(opsDeployDir, "prometheus/alerts.yaml"))[0]
	rule := opsKind(t, opsYAMLDocs(t, filepath.Join(opsDeployDir, "kubernetes/prometheusrule.yaml")), "PrometheusRule")
	if !reflect.DeepEqual(alerts["groups"], opsDig(rule, "spec", "groups")) {
		t.Errorf("kubernetes/prometheusrule.yaml spec.groups differ from prometheus/alerts.yaml groups; copy them over")
	}
}

// opsAnchor returns the GitHub anchor of a Markdown heading.
func opsAnchor(heading string) string {
	heading = strings.ToLower(strings.TrimSpace(heading))
	var b strings.Builder
	for _, r := range heading {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

func TestDeployAlertsHaveRunbooks(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatalf("read docs/operations.md: %v", err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "#") {
			anchors[opsAnchor(strings.TrimLeft(line, "#"))] = true
		}
	}

	alerts := opsYAMLDocs(t, filepath.Join(opsDeployDir, "prometheus/alerts.yaml"))[0]
	count := 0
	for _, group := range opsDig(alerts, "groups").([]any) {
		for _, rule := range opsDig(group, "rules").([]any) {
			name, _ := opsDig(rule, "alert").(string)
			count++
			if severity := opsDig(rule, "labels", "severity"); severity != "page" && severity != "warning" {
				t.Errorf("%s: severity %v, want page or warning", name, severity)
			}
			if opsDig(rule, "annotations", "summary") == nil {
				t.Errorf("%s has no summary", name)
			}
			runbook, _ := opsDig(rule, "annotations", "runbook_url").(string)
			_, anchor, _ := strings.Cut(runbook, "docs/operations.md#")
			if anchor != strings.ToLower(name) {
				t.Errorf("%s: runbook_url %q, want docs/operations.md#%s", name, runbook, strings.ToLower(name))
			}
			if !anchors[anchor] {
				t.Errorf("%s: docs/operations.md has no heading for #%s", name, anchor)
			}
		}
	}
	if count < 8 {
		t.Errorf("%d alerts, want at least the 8 documented ones", count)
	}
}

func TestDeployComposeAndDockerfile(t *testing.T) {
	compose := opsYAMLDocs(t, filepath.Join(opsDeployDir, "compose.yaml"))[0]
	services, _ := opsDig(compose, "services").(map[string]any)
	for _, name := range []string{"postgres", "stripe-emulator", "billingd"} {
		if services[name] == nil {
			t.Fatalf("compose has no %s service", name)
		}
	}
	if got := opsDig(services, "stripe-emulator", "command", 0); got != "stripe-emulator" {
		t.Errorf("stripe-emulator command = %v, want billingd stripe-emulator", got)
	}
	for _, name := range []string{"stripe-emulator", "billingd"} {
		env, _ := opsDig(services, name, "environment").(map[string]any)
		for key := range env {
			if !opsKnownEnv(key) {
				t.Errorf("compose %s sets %s, which billingd does not read", name, key)
			}
		}
	}
	env, _ := opsDig(services, "billingd", "environment").(map[string]any)
	if _, ok := env["STRIPE_SECRET_KEY"]; ok {
		t.Errorf("compose billingd sets STRIPE_SECRET_KEY; the local stack must use the emulator")
	}
	if base, _ := env["STRIPE_API_BASE"].(string); !strings.Contains(base, "stripe-emulator:12113") {
		t.Errorf("compose billingd STRIPE_API_BASE = %q, want the stripe-emulator service", base)
	}

	raw, err := os.ReadFile(filepath.Join(opsDeployDir, "Dockerfile"))
	if err != nil {
		t.Fatalf("read Dockerfile: %v", err)
	}
	var froms []string
	user := ""
	for _, line := range strings.Split(string(raw), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			froms = append(froms, fields[1])
			user = ""
		case "USER":
			user = fields[1]
		}
	}
	if len(froms) < 2 || !strings.HasPrefix(froms[0], "golang:1.26") {
		t.Errorf("Dockerfile stages %v, want a golang:1.26 builder and a runtime stage", froms)
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0") {
		t.Errorf("the runtime stage runs as %q, want a non-root user", user)
	}
	if !strings.Contains(string(raw), "./cmd/billingd") {
		t.Errorf("Dockerfile does not build ./cmd/billingd")
	}
}

// opsMetricName matches the metric names that rules and panels use.
var opsMetricName = regexp.MustCompile(`\b(?:taskpod_billing|go|process)_[a-zA-Z0-9_]+\b`)

// opsNamedMetrics returns the metric names in the alert expressions and
// the dashboard's queries, with the file that names each.
func opsNamedMetrics(t *testing.T) map[string]string {
	t.Helper()
	named := map[string]string{}
	alerts := opsYAMLDocs(t, filepath.Join(opsDeployDir, "prometheus/alerts.yaml"))[0]
	for _, group := range opsDig(alerts, "groups").([]any) {
		for _, rule := range opsDig(group, "rules").([]any) {
			expr, _ := opsDig(rule, "expr").(string)
			for _, name := range opsMetricName.FindAllString(expr, -1) {
				named[name] = "prometheus/alerts.yaml"
			}
		}
	}

	raw, err := os.ReadFile(filepath.Join(opsDeployDir, "grafana/taskpod-billing.json"))
	if err != nil {
		t.Fatalf("read dashboard: %v", err)
	}
	var dashboard struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dashboard); err != nil {
		t.Fatalf("parse dashboard: %v", err)
	}
	for _, p := range dashboard.Panels {
		for _, target := range p.Targets {
			for _, name := range opsMetricName.FindAllString(target.Expr, -1) {
				named[name] = "grafana/taskpod-billing.json"
			}
		}
	}
	return named
}

// opsIDInLabel matches a TaskPod or Stripe object id, which must never be a
// label value because each one would start a new series.
var opsIDInLabel = regexp.MustCompile(`"(?:task|pay|tok|cus|pi|seti|pm|ch|tr|req)_[A-Za-z0-9]{8,}"`)

func TestDeployMetricsExistInScrape(t *testing.T) {
	named := opsNamedMetrics(t)
	if len(named) < 15 {
		t.Fatalf("found only %d metric names in rules and dashboard: %v", len(named), named)
	}

	// A short scenario: one paid task from card to transfer.
	e := newOpsEnv(t)
	e.startEmulator()
	e.startServer()
	admin := e.mintToken("admin", "ops")
	customer := e.mintToken("customer", "user_deploy")
	agent := e.mintToken("agent", "agtDeploy")
	e.createAgent(admin, "agtDeploy", 100)
	e.saveCard(customer, "pm_card_visa")
	id := e.createTask(customer, "agtDeploy", 100).str("id")
	e.call(http.MethodPost, "/v1/tasks/"+id+"/complete", agent, map[string]any{}).expect(t, http.StatusOK, "complete")
	e.waitPayment(customer, id, "transferred")
	s := e.scrape()

	for name, file := range named {
		base := name
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if trimmed, ok := strings.CutSuffix(name, suffix); ok && s.families[trimmed] {
				base = trimmed
			}
		}
		if !s.families[base] {
			t.Errorf("%s names %s, which a scrape of billingd does not contain", file, name)
		}
	}

	// The metrics an operator needs exist before anything has happened to
	// them, so rates and alerts see zero instead of nothing.
	for _, key := range []string{
		`taskpod_billing_payment_transitions_total{to="refunded"}`,
		`taskpod_billing_payment_transitions_total{to="expired"}`,
		`taskpod_billing_payment_amount_minor_units_total{currency="usd",to="failed"}`,
		`taskpod_billing_outbox_relay_attempts_total{outcome="quarantined",step="transfer"}`,
		`taskpod_billing_stripe_requests_total{operation="capture",outcome="network"}`,
		`taskpod_billing_relay_handler_execution_time_seconds_count{handler_name="payment_steps",success="false"}`,
		`taskpod_billing_ledger_sealer_lag_seconds{}`,
	} {
		if _, ok := s.values[key]; !ok {
			t.Errorf("scrape lacks the zero series %s", key)
		}
	}

	for key := range s.values {
		if opsIDInLabel.MatchString(key) {
			t.Errorf("series %s has an object id as a label value", key)
		}
	}
}
