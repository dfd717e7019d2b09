package sdktest_test

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/sdktest"
	"github.com/accord-saga/accord/sdk/worker"
)

type charge struct {
	Amount int `json:"amount"`
}

type receipt struct {
	Charged int `json:"charged"`
}

var chargeHandler = worker.Typed(func(_ context.Context, t *worker.Task, in charge) (receipt, error) {
	switch {
	case in.Amount < 0:
		panic("negative amount")
	case in.Amount > 100:
		return receipt{}, worker.Failure("limit_exceeded", "over the limit")
	case in.Amount == 13:
		return receipt{}, worker.RetryableCode("unlucky", errors.New("try again"))
	case in.Amount == 7:
		return receipt{}, errors.New("network down")
	}
	if t.Phase == "compensation" {
		return receipt{Charged: -in.Amount}, nil
	}
	return receipt{Charged: in.Amount}, nil
})

func TestCall(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name    string
		input   any
		outcome string
		code    string
		output  string
	}{
		{"success", charge{Amount: 10}, client.OutcomeSuccess, "", `{"charged":10}`},
		{"business failure", charge{Amount: 500}, client.OutcomeFailure, "limit_exceeded", ""},
		{"retryable with a code", charge{Amount: 13}, client.OutcomeRetryable, "unlucky", ""},
		{"plain error", charge{Amount: 7}, client.OutcomeRetryable, worker.CodeError, ""},
		{"panic", charge{Amount: -1}, client.OutcomeRetryable, worker.CodePanic, ""},
		{"input of the wrong shape", map[string]string{"amount": "ten"}, client.OutcomeFailure, worker.CodeBadInput, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := sdktest.Call(ctx, chargeHandler, sdktest.NewTask(t, c.input))
			if res.Outcome != c.outcome || res.ErrorCode != c.code || string(res.Output) != c.output {
				t.Fatalf("result %+v, want %s/%s/%s", res, c.outcome, c.code, c.output)
			}
			if (c.code == worker.CodePanic) != (res.Panic != "") {
				t.Fatalf("panic %q", res.Panic)
			}
		})
	}

	task := sdktest.NewTask(t, charge{Amount: 5})
	task.Phase = "compensation"
	if res := sdktest.Call(ctx, chargeHandler, task); string(res.Output) != `{"charged":-5}` {
		t.Fatalf("compensation: %+v", res)
	}

	bad := func(context.Context, *worker.Task) (any, error) { return math.Inf(1), nil }
	if res := sdktest.Call(ctx, bad, sdktest.NewTask(t, nil)); res.Outcome != client.OutcomeRetryable || res.ErrorCode != worker.CodeBadOutput {
		t.Fatalf("unencodable output: %+v", res)
	}
}
