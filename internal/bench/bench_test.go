package bench

import (
	"context"
	"testing"

	"github.com/accord-saga/accord/sdk/sdktest"
)

// These run the benchmarks small, to check that they do what they report;
// the figures themselves come from accord bench (see BENCHMARKS.md).

func TestRunSagaPushAndPull(t *testing.T) {
	for _, mode := range []string{"push", "pull"} {
		t.Run(mode, func(t *testing.T) {
			res, err := RunSaga(context.Background(), SagaConfig{Mode: mode, Sagas: 60, Concurrency: 8, Warmup: -1, FailRate: 0.5, Dir: t.TempDir(), Partitions: 4})
			if err != nil {
				t.Fatal(err)
			}
			if res.Completed+res.Compensated != 60 || res.Failed != 0 {
				t.Fatalf("%+v: want all 60 sagas ended completed or compensated", res)
			}
			if res.Compensated == 0 || res.Completed == 0 {
				t.Fatalf("%+v: a fail rate of 0.5 over 60 sagas should give both outcomes", res)
			}
			if res.SagasPerSec <= 0 || res.E2EP99ms <= 0 || res.StorageEventsPerSec <= 0 {
				t.Fatalf("%+v: figures missing", res)
			}
		})
	}
}

func TestRunWaitingRecoversEverySaga(t *testing.T) {
	res, err := RunWaiting(context.Background(), SagaConfig{Sagas: 300, Concurrency: 8, Dir: t.TempDir(), Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.RecoveredSagas != 300 || res.RecoverSec <= 0 {
		t.Fatalf("%+v: want 300 sagas recovered", res)
	}
}

func TestRunBusDeliversEveryMessageToEveryGroup(t *testing.T) {
	res, err := RunBus(context.Background(), BusConfig{Messages: 600, Batch: 20, Publishers: 3, Keys: 30, Groups: 2, Consumers: 2, Dir: t.TempDir(), Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered != 1200 || res.PublishPerSec <= 0 || res.DeliveredPerSec <= 0 || res.E2EP99ms <= 0 {
		t.Fatalf("%+v: want 1200 deliveries (600 messages × 2 groups) and figures", res)
	}
}

func TestRunRemotePullWithSDKWorkers(t *testing.T) {
	srv := sdktest.NewServer(t)
	res, err := RunRemote(context.Background(), SagaConfig{Server: srv.URL, Mode: "pull", Sagas: 40, Concurrency: 8, Warmup: -1, FailRate: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed+res.Compensated != 40 || res.Completed == 0 || res.Compensated == 0 {
		t.Fatalf("%+v: want all 40 sagas ended, both outcomes", res)
	}
	if res.SagasPerSec <= 0 || res.E2EP99ms <= 0 || res.ServerCPUmsPerSaga <= 0 || res.PeakRSSMB <= 0 {
		t.Fatalf("%+v: figures missing", res)
	}
}
