package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envName is the environment variable that sets a flag: --database-url is
// ACCORD_DATABASE_URL.
func envName(flag string) string {
	return "ACCORD_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// bindEnv lets every flag of cmd be set by its ACCORD_* variable; a flag
// given on the command line wins. It also names the variable in the flag's
// help, so --help documents both.
func bindEnv(cmd *cobra.Command) {
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		f.Usage = fmt.Sprintf("%s [%s]", f.Usage, envName(f.Name))
	})
	prev := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		var err error
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if err != nil || f.Changed || f.Name == "help" {
				return
			}
			if v, ok := os.LookupEnv(envName(f.Name)); ok {
				if serr := f.Value.Set(v); serr != nil {
					err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, serr)
				}
			}
		})
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		if prev != nil {
			return prev(cmd, args)
		}
		return nil
	}
}
