package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// NewHandler registers gorn's collectors on reg (the Collector over opts, and the Go
// runtime and process collectors) and returns a handler for:
//
//	GET /metrics  reg in the Prometheus text format (concurrent scrapes share one gather)
//	GET /healthz  200 "ok" if the master loop answers a snapshot query within
//	              Options.Timeout, else 503: liveness
//	GET /readyz   200 "ok" if the master is serving, not shutting down, with at least
//	              Options.MinReady workers ready, else 503 and the reason: readiness
//
// reg should be fresh: registering gorn's collectors twice is an error.
func NewHandler(reg *prometheus.Registry, opts Options) (http.Handler, error) {
	if opts.Source == nil {
		return nil, errors.New("serving metrics: no snapshot source")
	}
	for _, c := range []prometheus.Collector{
		NewCollector(opts),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	scrape := promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:       zap.NewStdLog(opts.log()),
		ErrorHandling:  promhttp.ContinueOnError,
		Registry:       reg,
		CoalesceGather: true, // one master snapshot however many scrapers there are
	}))
	h := health{opts: opts}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", scrape)
	mux.HandleFunc("GET /healthz", h.healthz)
	mux.HandleFunc("GET /readyz", h.readyz)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "gorn: /metrics /healthz /readyz\n")
	})
	return mux, nil
}

type health struct{ opts Options }

// healthz is liveness: the master loop answers.
func (h health) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), h.opts.timeout())
	defer cancel()
	if _, err := h.opts.Source.Snapshot(ctx); err != nil {
		reply(w, http.StatusServiceUnavailable, fmt.Sprintf("unhealthy: the master loop did not answer within %s", h.opts.timeout()))
		return
	}
	reply(w, http.StatusOK, "ok")
}

// readyz is readiness: serving, not shutting down, enough workers ready.
func (h health) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), h.opts.timeout())
	defer cancel()
	s, err := h.opts.Source.Snapshot(ctx)
	if err != nil {
		reply(w, http.StatusServiceUnavailable, fmt.Sprintf("not ready: the master loop did not answer within %s", h.opts.timeout()))
		return
	}
	if why := ready(s, h.opts.minReady()); why != "" {
		reply(w, http.StatusServiceUnavailable, "not ready: "+why)
		return
	}
	reply(w, http.StatusOK, "ok")
}

func reply(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}
