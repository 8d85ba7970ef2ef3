package main

import (
	"os"
	"os/exec"
	"testing"
)

func TestParentOf(t *testing.T) {
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	if got := parentOf(cmd.Process.Pid); got != os.Getpid() {
		t.Errorf("parent of a child: %d, want %d", got, os.Getpid())
	}
	if got := parentOf(os.Getpid()); got != os.Getppid() {
		t.Errorf("parent of self: %d, want %d", got, os.Getppid())
	}
	if got := parentOf(1 << 30); got != 0 {
		t.Errorf("parent of no process: %d", got)
	}
}
