// Command chaos runs the lifecycle chaos sequence of gorn's TestChaos against any pre-fork
// server and counts failed requests the way a real HTTP client does: steady load while
// workers are recycled (max-requests), reloaded twice (HUP), scaled (TTIN, TTOU) and one
// is SIGKILLed; then TERM arrives while every worker is busy and connections are queued.
// bench/chaos.sh runs it against gorn and gunicorn side by side.
//
//	go run ./bench/chaos -addr 127.0.0.1:8000 -pid MASTER_PID
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
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
	ok, failed := termWithQueue(*addr, *pid, *busy, *queued)
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

// termWithQueue keeps every worker busy, queues more connections on the listener, sends
// TERM, and counts how many of those requests are answered.
func termWithQueue(addr string, pid, busy, queued int) (int, []string) {
	results := make(chan error, busy+queued)
	send := func(path string) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			results <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: gorn\r\n\r\n", path)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		results <- err
	}
	for i := 0; i < busy; i++ {
		go send("/slow?ms=1000")
	}
	time.Sleep(300 * time.Millisecond)
	for i := 0; i < queued; i++ {
		go send("/pid")
	}
	time.Sleep(300 * time.Millisecond)
	syscall.Kill(pid, syscall.SIGTERM)
	ok, fails := 0, []string{}
	for i := 0; i < busy+queued; i++ {
		if err := <-results; err != nil {
			fails = append(fails, err.Error())
		} else {
			ok++
		}
	}
	return ok, fails
}
