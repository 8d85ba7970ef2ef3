package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/gornhq/gorn/internal/scoreboard"
)

func TestCheckFormats(t *testing.T) {
	if err := checkFormats(formats()); err != nil {
		t.Errorf("own formats refused: %v", err)
	}
	for _, want := range []string{
		"handover=2,scoreboard=1",
		"handover=1,scoreboard=99",
		"handover=1,mold=1",
		"handover=x",
	} {
		if err := checkFormats(want); err == nil {
			t.Errorf("%s accepted", want)
		}
	}
}

// TestAdoptRefusesAnotherFormat: a handover or scoreboard this binary would misread is
// refused before any descriptor is touched.
func TestAdoptRefusesAnotherFormat(t *testing.T) {
	for _, st := range []upgradeState{
		{Version: handoverVersion + 1, Scoreboard: scoreboard.Version},
		{Version: handoverVersion, Scoreboard: scoreboard.Version + 1},
	} {
		js, _ := json.Marshal(st)
		getenv := func(k string) string {
			if k == upgradeEnv {
				return string(js)
			}
			return ""
		}
		_, err := adoptUpgrade(getenv)
		if err == nil || !strings.Contains(err.Error(), "upgrade refused") {
			t.Errorf("handover %s: error %v, want a refusal", js, err)
		}
	}
}
