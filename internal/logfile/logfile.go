// Package logfile holds the master's log destinations: a zap logger writing to stderr or
// to an error-log file that USR1 reopens by path (logrotate's convention), and the file
// the workers inherit as their stderr, so their lines land in the same place.
package logfile

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Files is the master's logger and the files behind it.
type Files struct {
	Logger *zap.Logger
	errlog *reopenable // nil when logging to stderr
	stderr *os.File
	sink   zapcore.WriteSyncer
	json   bool
}

// Open logs to path ("-" or "" means stderr) in format ("json" or text) at level
// (gunicorn's names: debug, info, warning, error, critical). stderrFile is what workers
// inherit when there is no file.
func Open(path, format, level string, stderr io.Writer, stderrFile *os.File) (*Files, error) {
	lf := &Files{stderr: stderrFile, json: format == "json"}
	var sink zapcore.WriteSyncer = zapcore.Lock(zapcore.AddSync(stderr))
	if path != "-" && path != "" {
		f, err := openAppend(path)
		if err != nil {
			return nil, err
		}
		lf.errlog = &reopenable{path: path, f: f}
		sink = lf.errlog
	}
	lf.Logger = NewLogger(format, level, sink)
	lf.sink = sink
	return lf, nil
}

// NewLogger is the master's zap logger over sink: JSON lines, or gunicorn-like text.
func NewLogger(format, level string, sink zapcore.WriteSyncer) *zap.Logger {
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

// WorkerStderr is what a worker started now inherits as fd 2: the error log file as it
// is now (after a reopen, the new one), or the master's stderr.
func (l *Files) WorkerStderr() *os.File {
	if l.errlog != nil {
		return l.errlog.file()
	}
	return l.stderr
}

// Reopen reopens the error log file (USR1); workers reopen their own on the same signal.
func (l *Files) Reopen() {
	if l.errlog == nil {
		return
	}
	if err := l.errlog.reopen(); err != nil {
		l.Logger.Error("reopening the error log", zap.Error(err))
		return
	}
	l.Logger.Info("log files reopened")
}

// Close flushes the logger and closes the error log file.
func (l *Files) Close() {
	_ = l.Logger.Sync()
	if l.errlog != nil {
		_ = l.errlog.file().Close()
	}
}

// reopenable is a log file that can be reopened by path.
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

func (r *reopenable) file() *os.File {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f
}

func (r *reopenable) reopen() error {
	f, err := openAppend(r.path)
	if err != nil {
		return err
	}
	r.mu.Lock()
	old := r.f
	r.f = f
	r.mu.Unlock()
	if err := old.Close(); err != nil {
		return fmt.Errorf("closing the old log file: %w", err)
	}
	return nil
}

// FaultLogger is the logger name of the lines WorkerFaults relays.
const FaultLogger = "worker.faulthandler"

// WorkerFaults logs what a worker's faulthandler writes to r (the stack dump of a worker
// aborted for a timeout, or of one that crashed), one error record per line, until EOF. JSON: {"logger":"worker.faulthandler",
// "msg":LINE,"pid":...,"slot":...}. Text: the worker's own prefix, "[TIME] [PID] [ERROR]
// worker[SLOT] faulthandler: LINE". Blank lines are dropped.
func (l *Files) WorkerFaults(r io.Reader, pid, slot int) {
	// Most workers never dump: nothing is allocated until the first byte arrives (or EOF,
	// when the worker is gone), so a recycled worker costs the master no buffers.
	first := make([]byte, 1)
	if n, _ := r.Read(first); n == 0 {
		return
	}
	rec := l.Logger.Named(FaultLogger).With(zap.Int("pid", pid), zap.Int("slot", slot))
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(first), r), 4096)
	for {
		// A line longer than the buffer comes as several records: faulthandler truncates
		// names at 500 characters, so only a pathological file name gets there.
		raw, _, err := br.ReadLine()
		line := strings.TrimRight(string(raw), " \t\r")
		if strings.TrimSpace(line) != "" {
			if l.json {
				rec.Error(line)
			} else {
				stamp := time.Now().Format("[2006-01-02 15:04:05 -0700]")
				_, _ = fmt.Fprintf(l.sink, "%s [%d] [ERROR] worker[%d] faulthandler: %s\n", stamp, pid, slot, line)
			}
		}
		if err != nil {
			return
		}
	}
}
