//go:build !gorn_fault_exit && !gorn_fault_hang

package main

// upgradeFault is a test seam for the binary upgrade's way back. Built with the tag
// gorn_fault_exit or gorn_fault_hang, gorn fails or hangs right after adopting an
// upgrade's handover, as a release with a bug there would; test/ upgrades to such
// binaries. In a normal build it does nothing.
func upgradeFault() error { return nil }
