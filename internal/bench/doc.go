// Package bench measures Accord on the machine it runs on. Every figure is
// reported beside a limit of the same machine measured in the same run (the
// disk's fsync rate, the store's batched append rate), so that figures read
// as ratios and compare across machines.
package bench
