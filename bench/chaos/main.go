// Command chaos runs the lifecycle chaos sequence of gorn's TestChaos against any pre-fork
// server and counts failed requests the way a real HTTP client does: steady load while
// workers are recycled (max-requests), reloaded twice (HUP), scaled (TTIN, TTOU) and one
// is SIGKILLed; then TERM arrives while every worker is busy and connections are queued.
// bench/chaos.sh runs it against gorn and gunicorn side by side.
//
//	go run ./bench/chaos -addr 127.0.0.1:8000 -pid MASTER_PID
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/gornhq/gorn/internal/loadgen"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "server address")
	pid := flag.Int("pid", 0, "master pid")
	clients := flag.Int("clients", 6, "concurrent clients")
	pause := flag.Duration("pause", 4*time.Second, "time between chaos steps")
	busy := flag.Int("busy", 3, "slow requests in flight at TERM (one per worker)")
	queued := flag.Int("queued", 12, "connections queued on the listener at TERM")
	flag.Parse()
	if *pid == 0 {
		fmt.Fprintln(os.Stderr, "chaos: -pid is required")
		os.Exit(2)
	}
	l := loadgen.Start(*addr, *clients, "/", "/json", "/pid", "/slow?ms=5")
	step := func(name string, sig syscall.Signal) {
		if sig != 0 {
			if err := syscall.Kill(*pid, sig); err != nil {
				fmt.Fprintf(os.Stderr, "chaos: %s: %v\n", name, err)
				os.Exit(1)
			}
		}
		time.Sleep(*pause)
		fmt.Printf("%-22s %s\n", name, l)
	}
	step("max-requests", 0)
	step("HUP", syscall.SIGHUP)
	step("HUP again", syscall.SIGHUP)
	step("TTIN", syscall.SIGTTIN)
	step("TTOU", syscall.SIGTTOU)
	kids, _ := exec.Command("sh", "-c", fmt.Sprintf("cat /proc/%d/task/*/children", *pid)).Output()
	if f := strings.Fields(string(kids)); len(f) > 0 {
		var w int
		fmt.Sscan(f[0], &w)
		syscall.Kill(w, syscall.SIGKILL)
	}
	step("SIGKILL one worker", 0)
	fails := l.Finish()
	fmt.Printf("RESULT sent=%d ok=%d retried=%d failed=%d\n", l.Sent.Load(), l.OK.Load(), l.Retried.Load(), len(fails))
	printFails(fails)
	ok, failed := loadgen.QueuedAtStop(*addr, *busy, *queued, "/slow?ms=1000", "/pid", func() { syscall.Kill(*pid, syscall.SIGTERM) })
	fmt.Printf("TERM with %d busy and %d queued connections: ok=%d failed=%d\n", *busy, *queued, ok, len(failed))
	printFails(failed)
}

func printFails(fails []string) {
	for i, f := range fails {
		if i == 10 {
			fmt.Printf("  ... %d more\n", len(fails)-10)
			break
		}
		fmt.Println("  " + f)
	}
}
