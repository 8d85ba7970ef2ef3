package metrics_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/metrics"
)

// starting is a master whose only worker is still importing the app.
type starting struct{}

func (starting) Snapshot(context.Context) (master.Snapshot, error) {
	return master.Snapshot{Desired: 1, Workers: []master.WorkerInfo{{State: "booting"}}}, nil
}

func ExampleNewHandler() {
	h, err := metrics.NewHandler(prometheus.NewRegistry(), metrics.Options{Source: starting{}, Version: "0.1.0"})
	if err != nil {
		panic(err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		fmt.Print(path, " ", w.Code, " ", w.Body.String())
	}
	// Output:
	// /healthz 200 ok
	// /readyz 503 not ready: 0 of 1 workers ready, need 1
}
