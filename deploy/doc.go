// Package deploy holds gorn's deployment files: the Kubernetes base (kubernetes/), the
// Grafana dashboard (grafana/), the Prometheus alerting rules (prometheus/) and the systemd
// units (systemd/). It has no code; its tests decode every file strictly and check that the
// files agree with each other and with gorn's flags.
package deploy
