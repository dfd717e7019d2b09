package sqlite

import "fmt"

// partState is a partition's row (lease and head) as the current batch
// sees it. A batch reads each partition it touches once and writes its head
// back once, just before COMMIT, rather than a SELECT and an UPDATE per
// commit. The writer is the only one that writes the rows, so the copy
// stays true for the whole batch as long as every write in the batch goes
// through it: commits move head, lease operations change epoch and expiry.
type partState struct {
	loaded  bool
	dirty   bool // head or msgHead moved: write them before COMMIT
	epoch   int64
	expires int64
	head    int64
	msgHead int64 // the last message position (the bus's counter)
}

// partition returns the batch's view of partition p, reading it on first
// use.
func (tx *wtx) partition(p int) (*partState, error) {
	st := &tx.parts[p]
	if !st.loaded {
		if err := tx.s.partitionGet.QueryRow(p).Scan(&st.epoch, &st.expires, &st.head, &st.msgHead); err != nil {
			return nil, fmt.Errorf("sqlite: read partition %d: %w", p, err)
		}
		st.loaded = true
		tx.touched = append(tx.touched, p)
	}
	return st, nil
}

// leaseWritten keeps the batch's view in step with a lease write.
func (tx *wtx) leaseWritten(p int, epoch, expires int64) {
	if st := &tx.parts[p]; st.loaded {
		st.epoch, st.expires = epoch, expires
	}
}

// flushHeads writes the heads (event and message) the batch moved.
func (tx *wtx) flushHeads() error {
	for _, p := range tx.touched {
		if st := &tx.parts[p]; st.dirty {
			if _, err := tx.s.headSet.Exec(st.head, st.msgHead, p); err != nil {
				return fmt.Errorf("sqlite: write head of partition %d: %w", p, err)
			}
		}
	}
	return nil
}

// reset forgets the batch's view, for the next batch.
func (tx *wtx) reset(now int64) {
	for _, p := range tx.touched {
		tx.parts[p] = partState{}
	}
	tx.touched = tx.touched[:0]
	tx.now = now
}
