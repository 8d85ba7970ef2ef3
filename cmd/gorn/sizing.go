package main

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/gornhq/gorn/master"
)

// sizer decides the worker count from flags or the container's limits (placeholder until
// cgroup sizing lands).
type sizer struct {
	cfg *Config
	log *zap.Logger
	m   *master.Master
}

func newSizer(cfg *Config, log *zap.Logger) *sizer { return &sizer{cfg: cfg, log: log} }

func (s *sizer) attach(m *master.Master) { s.m = m }

func (s *sizer) initial() (int, string) {
	if s.cfg.Workers > 0 {
		return s.cfg.Workers, fmt.Sprintf("workers=%d (from %s)", s.cfg.Workers, s.cfg.WorkersSource)
	}
	return 1, "workers=1 (default)"
}

func (s *sizer) resize() (int, string, bool) { return 0, "", false }

func (s *sizer) oomKills() (uint64, bool) { return 0, false }
