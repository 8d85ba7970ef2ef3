package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/gornhq/gorn/config"
	"github.com/gornhq/gorn/internal/cgroup"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/metrics"
	"github.com/gornhq/gorn/socket"
)

// metricsShutdownTimeout bounds how long stopping the metrics server waits for scrapes
// in progress.
const metricsShutdownTimeout = 2 * time.Second

// serveMetrics serves /metrics, /healthz and /readyz on cfg.MetricsBind until stop is
// called. The address is bound before it returns, so "address in use" is an error here.
func serveMetrics(cfg *config.Config, m *master.Master, ls []*socket.Listener, limits func() metrics.Limits, hookRestarts func() uint64, processes func() map[string]int, log *zap.Logger) (stop func(), err error) {
	log = log.Named("metrics")
	listeners := make([]metrics.Listener, len(ls))
	for i, l := range ls {
		listeners[i] = l
	}
	// The master's CPU cgroup, which its workers share, found once: moving gorn to another
	// group while it runs is not a case worth a mountinfo parse per scrape.
	groups := cgroup.Detect(cgroup.Options{})
	h, err := metrics.NewHandler(prometheus.NewRegistry(), metrics.Options{
		Source:    m,
		Listeners: listeners,
		Limits:    limits,
		Processes: processes,
		CPUStat: func() (cgroup.CPUStat, error) {
			if groups.CPU.Dir == "" {
				return cgroup.CPUStat{}, fmt.Errorf("no CPU cgroup visible: %w", os.ErrNotExist)
			}
			return cgroup.ReadCPUStat(groups.CPU.Version, groups.CPU.Dir, groups.CPUAcct.Dir)
		},
		HookHost: hookRestarts,
		MinReady: cfg.MinReady,
		Version:  version,
		Log:      log,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.MetricsBind)
	if err != nil {
		return nil, fmt.Errorf("binding --metrics-bind %s: %w", cfg.MetricsBind, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(log),
	}
	log.Info("serving /metrics, /healthz and /readyz", zap.String("address", ln.Addr().String()))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", zap.Error(err))
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		<-done
	}, nil
}
