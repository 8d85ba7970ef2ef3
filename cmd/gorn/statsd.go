package main

import (
	"context"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gornhq/gorn/config"
	"github.com/gornhq/gorn/internal/logfile"
	"github.com/gornhq/gorn/internal/statsd"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/socket"
)

// statsdSink is the master's StatsD client (--statsd-host, --statsd-prefix,
// --dogstatsd-tags), replaced when a HUP changes them (gunicorn re-creates its logger on
// reload); nil inside while StatsD is off.
type statsdSink struct {
	cur atomic.Pointer[statsd.Client]
	log *zap.Logger
}

// newStatsdSink connects to cfg's server, if any, and counts the master's warnings and
// errors as gunicorn's gunicorn.log.warning and gunicorn.log.error. The faulthandler lines
// relayed for the workers are not log calls of gunicorn's and are not counted.
func newStatsdSink(cfg *config.Config, logs *logfile.Files) *statsdSink {
	s := &statsdSink{log: logs.Logger}
	s.swap(s.dial(cfg))
	logs.Logger = logs.Logger.WithOptions(zap.Hooks(func(e zapcore.Entry) error {
		c := s.cur.Load()
		if c == nil || e.LoggerName == logfile.FaultLogger {
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
	return s
}

// dial connects to cfg's server: nil when StatsD is off, or when the address does not
// resolve (warned: as in gunicorn, serving does not depend on it). It may resolve a host
// name: call it off the master loop.
func (s *statsdSink) dial(cfg *config.Config) *statsd.Client {
	if cfg.StatsdHost == "" {
		return nil
	}
	c, err := statsd.Dial(cfg.StatsdHost, cfg.StatsdPrefix, cfg.DogstatsdTags)
	if err != nil {
		s.log.Warn("no StatsD metrics from the master", zap.Error(err))
		return nil
	}
	return c
}

// changed reports whether next sends StatsD elsewhere, or otherwise, than prev.
func statsdChanged(prev, next *config.Config) bool {
	return prev.StatsdHost != next.StatsdHost || prev.StatsdPrefix != next.StatsdPrefix || prev.DogstatsdTags != next.DogstatsdTags
}

// swap makes c the client (nil: off) and closes the one it replaces.
func (s *statsdSink) swap(c *statsd.Client) {
	if old := s.cur.Swap(c); old != nil {
		old.Close()
	}
}

// Close closes the current client.
func (s *statsdSink) Close() { s.swap(nil) }

// reportWorkers sends gunicorn's gunicorn.workers gauge, the workers not being stopped,
// whenever it changes (checked every second, as gunicorn's arbiter loop does), and with
// --enable-backlog-metric gunicorn.backlog, the connections waiting in the TCP listeners'
// queues, every second; until ctx ends. Nothing is asked of the master while StatsD is off.
func (s *statsdSink) reportWorkers(ctx context.Context, m *master.Master, backlog []*socket.Listener) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, lastClient := -1, (*statsd.Client)(nil)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c := s.cur.Load()
		if c == nil {
			continue
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
		if n != last || c != lastClient {
			c.Gauge("gunicorn.workers", n)
			last, lastClient = n, c
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
