//go:build gorn_fault_hang

package main

func upgradeFault() error { select {} }
