//go:build gorn_fault_exit

package main

import "errors"

func upgradeFault() error {
	return errors.New("built with gorn_fault_exit: failing after adopting the handover")
}
