// Command accord is the Accord server and its command-line client.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/accord-saga/accord/internal/buildinfo"
)

// version is this build's version (see internal/buildinfo).
var version = buildinfo.Read().Version

// exitError carries a specific exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCommand()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "accord: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	os.Exit(1)
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "accord",
		Short:         "Accord coordinates work that spans several services: sagas, events, routing slips.",
		Long:          "Accord makes an operation that spans several services end clean — every step done, or every done step compensated — through crashes, retries, slow services and network faults.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.AddCommand(newServerCommand(), newBenchCommand())
	root.AddCommand(newDemoCommand())
	root.AddCommand(newVersionCommand(), newBackupCommand(), newRestoreCommand())
	root.AddCommand(newClientCommands()...)
	return root
}
