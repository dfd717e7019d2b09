// Package sdktest helps test code built on the SDK.
//
// Handlers, without a server:
//
//	res := sdktest.Call(ctx, myHandler, sdktest.NewTask(t, Charge{Amount: 10}))
//	if res.Outcome != client.OutcomeFailure || res.ErrorCode != "limit_exceeded" { ... }
//
// Call runs a handler exactly as a worker does (panic recovery, the error to
// outcome mapping, output encoding), so what it returns is what the worker
// would report.
//
// Workers and clients end to end: NewServer runs a real Accord server — the
// engine and the event bus on a temporary embedded store, behind the HTTP
// API — in the test process, and stops it when the test ends.
package sdktest
