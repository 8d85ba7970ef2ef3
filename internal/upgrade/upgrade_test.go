package upgrade

import (
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/internal/scoreboard"
	"github.com/gornhq/gorn/master"
)

func TestCheckFormats(t *testing.T) {
	if err := CheckFormats(Formats()); err != nil {
		t.Errorf("own formats refused: %v", err)
	}
	for _, want := range []string{
		"handover=2,scoreboard=1",
		"handover=1,scoreboard=99",
		"handover=1,mold=1",
		"handover=x",
	} {
		if err := CheckFormats(want); err == nil {
			t.Errorf("%s accepted", want)
		}
	}
}

// TestDecodeRefusesAnotherFormat: a handover or scoreboard this binary would misread is
// refused; one from before formats had versions is read as version 1.
func TestDecodeRefusesAnotherFormat(t *testing.T) {
	for _, st := range []State{
		{Version: StateVersion + 1, Scoreboard: scoreboard.Version},
		{Version: StateVersion, Scoreboard: scoreboard.Version + 1},
	} {
		js, _ := json.Marshal(st)
		if _, err := Decode(string(js)); err == nil || !strings.Contains(err.Error(), "upgrade refused") {
			t.Errorf("handover %s: error %v, want a refusal", js, err)
		}
	}
	st, err := Decode(`{"board":5,"handover":{"desired":3}}`)
	if err != nil || st.Board != 5 || st.Handover.Desired != 3 {
		t.Errorf("an unversioned handover: %+v, %v", st, err)
	}
}

// TestEnvRoundTrip: what the old binary sends is what the new one reads, and no stale
// protocol variable rides along.
func TestEnvRoundTrip(t *testing.T) {
	st := State{Version: StateVersion, Scoreboard: scoreboard.Version, Listeners: []int{7}, Board: 4, Lifeline: [2]int{5, 6},
		Handover: master.Handover{Desired: 2, Generation: 3, Workers: []master.HandoverWorker{{Pid: 10, Slot: 1, Generation: 3}}}}
	env, err := Env([]string{"PATH=/bin", EnvRolledBack + "=old", EnvFormats + "=x", EnvState + "=stale"}, st, Rollback{Exe: 9, Args: []string{"gorn", "app"}, Fds: st.Fds()})
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := vars[k]; dup {
			t.Errorf("%s twice", k)
		}
		vars[k] = v
	}
	if _, ok := vars[EnvRolledBack]; ok || vars[EnvFormats] != "" || vars["PATH"] != "/bin" {
		t.Errorf("environment %q", env)
	}
	got, err := Decode(vars[EnvState])
	if err != nil {
		t.Fatal(err)
	}
	if got.Board != 4 || got.Listeners[0] != 7 || got.Handover.Workers[0].Pid != 10 {
		t.Errorf("decoded %+v", got)
	}
	var rb Rollback
	if err := json.Unmarshal([]byte(vars[EnvRollback]), &rb); err != nil || rb.Exe != 9 || len(rb.Fds) != 4 {
		t.Errorf("way back %+v, %v", rb, err)
	}
	if rb := DecodeRolledBack(`{"reason":"hung","stops":[15]}`); rb.Reason != "hung" || len(rb.Stops) != 1 || rb.Stops[0] != syscall.SIGTERM {
		t.Errorf("DecodeRolledBack: %+v", rb)
	}
	if DecodeRolledBack("plain").Reason != "plain" {
		t.Error("DecodeRolledBack of a plain reason")
	}
}

// TestGuardRestoresTheHandover: whatever the new image does with the handover's
// descriptors, the guard puts the same open files back at the same numbers for the
// previous binary; released, it holds nothing.
func TestGuardRestoresTheHandover(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	exe, err := unix.Open("/proc/self/exe", unix.O_PATH, 0)
	if err != nil {
		t.Fatal(err)
	}
	wfd, err := unix.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	rb, _ := json.Marshal(Rollback{Exe: exe, Args: []string{"gorn"}, Fds: []int{wfd}})
	env := map[string]string{EnvRollback: string(rb), EnvState: `{"version":1}`}
	g, err := Arm(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(exe), unix.F_GETFD, 0); err == nil {
		t.Error("the original handle on the old binary is still open (it would leak into workers)")
	}
	unix.Close(wfd) // the new image closes its copy, as serve's defers do on an error
	if err := g.restore(); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(wfd, []byte("back")); err != nil {
		t.Fatalf("writing to the restored fd %d: %v", wfd, err)
	}
	buf := make([]byte, 4)
	if n, _ := r.Read(buf); string(buf[:n]) != "back" {
		t.Errorf("the restored fd is another file: read %q", buf[:n])
	}
	if flags, _ := unix.FcntlInt(uintptr(wfd), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC != 0 {
		t.Error("a restored handover fd is close-on-exec: the previous binary would not get it")
	}
	if _, err := os.Stat("/proc/self/fd/" + strconv.Itoa(exe)); err != nil {
		t.Errorf("the old binary's handle is not back at %d: %v", exe, err)
	}
	saved := len(g.saved)
	g.Release()
	unix.Close(wfd)
	unix.Close(exe)
	if saved != 2 || g.saved != nil {
		t.Errorf("saved %d descriptors, %d after Release", saved, len(g.saved))
	}
}

// TestWatch: the new image is trusted once its loop runs; before that, an exit, a panic or
// a hang each come back as the reason to roll back.
func TestWatch(t *testing.T) {
	const bound = 200 * time.Millisecond
	for _, tc := range []struct {
		name     string
		run      func(serving func(), failed func(error)) int
		code     int
		why      string
		released bool
	}{
		{"serves, then exits", func(serving func(), _ func(error)) int {
			serving()
			serving() // called once per loop start, idempotent
			return 0
		}, 0, "", true},
		{"exits first", func(_ func(), failed func(error)) int {
			failed(errors.New("adopting listeners: bad fd"))
			return 1
		}, 1, "exited with code 1 before its master loop ran: adopting listeners: bad fd", false},
		{"panics first", func(func(), func(error)) int { panic("nil map") }, 1, "panicked before its master loop ran: nil map", false},
		{"hangs", func(func(), func(error)) int { select {} }, 1, "was not running 200ms after exec", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			released := 0
			start := time.Now()
			code, why := Watch(bound, tc.run, func() { released++ })
			if code != tc.code || (tc.why == "") != (why == "") || !strings.Contains(why, tc.why) {
				t.Errorf("Watch = %d %q, want %d %q", code, why, tc.code, tc.why)
			}
			if (released == 1) != tc.released || released > 1 {
				t.Errorf("the way back released %d times", released)
			}
			if took := time.Since(start); tc.why != "" && !strings.Contains(tc.why, "running") && took >= bound {
				t.Errorf("waited %s for a run that ended at once", took)
			}
		})
	}
}
