package main

import (
	"context"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gornhq/gorn/config"
	"github.com/gornhq/gorn/internal/logfile"
	"github.com/gornhq/gorn/internal/statsd"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/socket"
)

// startStatsd connects the master's StatsD client (--statsd-host) and counts the master's
// warnings and errors as gunicorn's gunicorn.log.warning and gunicorn.log.error. The
// faulthandler lines relayed for the workers are not log calls of gunicorn's and are not
// counted. Returns nil when StatsD is off or the address does not resolve (warned: as
// gunicorn, serving does not depend on it).
func startStatsd(cfg *config.Config, logs *logfile.Files) *statsd.Client {
	if cfg.StatsdHost == "" {
		return nil
	}
	c, err := statsd.Dial(cfg.StatsdHost, cfg.StatsdPrefix, cfg.DogstatsdTags)
	if err != nil {
		logs.Logger.Warn("no StatsD metrics", zap.Error(err))
		return nil
	}
	logs.Logger = logs.Logger.WithOptions(zap.Hooks(func(e zapcore.Entry) error {
		if e.LoggerName == logfile.FaultLogger {
			return nil
		}
		switch e.Level {
		case zapcore.WarnLevel:
			c.Increment("gunicorn.log.warning", 1)
		case zapcore.ErrorLevel:
			c.Increment("gunicorn.log.error", 1)
		case zapcore.DPanicLevel, zapcore.PanicLevel, zapcore.FatalLevel:
			c.Increment("gunicorn.log.critical", 1)
		}
		return nil
	}))
	return c
}

// reportWorkers sends gunicorn's gunicorn.workers gauge, the workers not being stopped,
// whenever it changes (checked every second, as gunicorn's arbiter loop does), and with
// --enable-backlog-metric gunicorn.backlog, the connections waiting in the TCP listeners'
// queues, every second; until ctx ends.
func reportWorkers(ctx context.Context, c *statsd.Client, m *master.Master, backlog []*socket.Listener) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := -1
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		snap, err := m.Snapshot(ctx)
		if err != nil {
			return
		}
		n := 0
		for _, w := range snap.Workers {
			if w.State != "draining" {
				n++
			}
		}
		if n != last {
			c.Gauge("gunicorn.workers", n)
			last = n
		}
		if len(backlog) > 0 {
			queued, tcp := 0, false
			for _, l := range backlog {
				if q, _, err := socket.QueueDepth(l.Fd()); err == nil {
					queued, tcp = queued+int(q), true
				}
			}
			if tcp {
				c.Histogram("gunicorn.backlog", queued)
			}
		}
	}
}
