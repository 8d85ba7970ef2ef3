package main

import (
	"fmt"
	"io"
	"os"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gornhq/gorn/config"
)

// logFiles owns the master's log destinations and reopens them on USR1.
type logFiles struct {
	logger *zap.Logger
	stdout *os.File
	errlog *reopenable // nil when logging to stderr
	stderr *os.File
}

// reopenable is a log file that can be reopened by path (logrotate's USR1 convention).
type reopenable struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log file: %w", err)
	}
	return f, nil
}

func (r *reopenable) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Write(p)
}

func (r *reopenable) Sync() error { return nil }

func (r *reopenable) reopen() error {
	f, err := openAppend(r.path)
	if err != nil {
		return err
	}
	r.mu.Lock()
	old := r.f
	r.f = f
	r.mu.Unlock()
	return old.Close()
}

func openLogs(cfg *config.Config, stdout, stderr io.Writer) (*logFiles, error) {
	lf := &logFiles{stdout: os.Stdout, stderr: os.Stderr}
	var sink zapcore.WriteSyncer = zapcore.Lock(zapcore.AddSync(stderr))
	if cfg.ErrorLog != "-" && cfg.ErrorLog != "" {
		f, err := openAppend(cfg.ErrorLog)
		if err != nil {
			return nil, err
		}
		lf.errlog = &reopenable{path: cfg.ErrorLog, f: f}
		sink = lf.errlog
	}
	lf.logger = newLogger(cfg.LogFormat, cfg.LogLevel, sink)
	return lf, nil
}

func newLogger(format, level string, sink zapcore.WriteSyncer) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.MessageKey = "msg"
	var encoder zapcore.Encoder
	if format == "json" {
		encoder = zapcore.NewJSONEncoder(enc)
	} else {
		enc.EncodeTime = zapcore.TimeEncoderOfLayout("[2006-01-02 15:04:05 -0700]")
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		enc.ConsoleSeparator = " "
		encoder = zapcore.NewConsoleEncoder(enc)
	}
	lvl := map[string]zapcore.Level{"debug": zap.DebugLevel, "info": zap.InfoLevel, "warning": zap.WarnLevel, "error": zap.ErrorLevel, "critical": zap.ErrorLevel}[level]
	return zap.New(zapcore.NewCore(encoder, sink, lvl))
}

// workerStderr is what workers inherit as fd 2: the error log file, or our stderr.
func (l *logFiles) workerStderr() *os.File {
	if l.errlog != nil {
		return l.errlog.f
	}
	return l.stderr
}

// Reopen reopens the error log file (USR1); workers reopen their own on the same signal.
func (l *logFiles) Reopen() {
	if l.errlog == nil {
		return
	}
	if err := l.errlog.reopen(); err != nil {
		l.logger.Error("reopening the error log", zap.Error(err))
		return
	}
	l.logger.Info("log files reopened")
}

func (l *logFiles) Close() {
	_ = l.logger.Sync()
	if l.errlog != nil {
		l.errlog.f.Close()
	}
}
