package sqlite

// SetWALLimitFrames lowers the log's limit for a test; it returns a
// function that restores it.
func SetWALLimitFrames(n int) (restore func()) {
	old := walLimitFrames.Swap(int64(n))
	return func() { walLimitFrames.Store(old) }
}
