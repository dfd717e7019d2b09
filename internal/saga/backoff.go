package saga

import "time"

// The saga's random generator is SplitMix64: its whole state is one
// uint64 kept in State.RNG, seeded from StartInput.Seed, so that retry
// jitter is random across sagas yet replays exactly. Each retry draws once
// and the step.retry_scheduled / compensation.retry_scheduled event
// advances the state, so Replay reaches the same generator state.

const splitmixGamma = 0x9e3779b97f4a7c15

func rngAdvance(state uint64) uint64 { return state + splitmixGamma }

// rngDraw is the output SplitMix64 gives for the next state.
func rngDraw(state uint64) uint64 {
	z := state + splitmixGamma
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// maxBackoffSteps bounds the growth loop; with any multiplier ≥ 1.01 the
// delay reaches the largest allowed MaxInterval well before.
const maxBackoffSteps = 10000

// backoff returns the delay before the attempt that follows n failed
// attempts (n ≥ 1) of one budget. Arithmetic is integer except single
// multiplications, which every platform rounds alike, so a seed gives the
// same delays everywhere.
func backoff(p RetryPolicy, n int, rng uint64) time.Duration {
	base := time.Duration(p.InitialInterval)
	ceil := time.Duration(p.MaxInterval)
	for k := 1; k < n && k <= maxBackoffSteps && base < ceil; k++ {
		f := float64(base) * p.Multiplier
		if f >= float64(ceil) {
			base = ceil
		} else {
			base = time.Duration(f)
		}
	}
	base = min(base, ceil)
	if p.Jitter > 0 {
		if j := time.Duration(float64(base) * p.Jitter); j > 0 {
			base += time.Duration(rngDraw(rng)%uint64(2*j+1)) - j
		}
	}
	base = (base + time.Millisecond/2) / time.Millisecond * time.Millisecond
	return max(min(base, ceil), time.Millisecond)
}
