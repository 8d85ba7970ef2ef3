package main

import (
	"go.uber.org/zap"

	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/socket"
)

func serveMetrics(cfg *Config, m *master.Master, ls []*socket.Listener, s *sizer, log *zap.Logger) (func(), error) {
	return func() {}, nil
}
