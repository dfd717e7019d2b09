package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

func exerciseIdempotencyKeys(t *testing.T, h Harness) {
	startCommit := func(key string, result []byte, ttl time.Duration) *storage.CommitParams {
		return &storage.CommitParams{
			Appends:         []storage.StreamAppend{{Stream: "saga/" + key, ExpectedVersion: storage.NoStream, Events: events("saga/"+key, 0, 1)}},
			IdempotencyKeys: []storage.IdempotencyKeyInsert{{Scope: "saga.start", Key: key, Result: result, TTL: ttl}},
		}
	}

	t.Run("RetryReturnsFirstResult", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 2)
		first := s.commit(1, startCommit("k1", []byte(`{"saga":"s-1"}`), longTTL))
		// The retry is the same request again: same key, same expected
		// version, different result it would have stored.
		_, err := s.tryCommit(1, startCommit("k1", []byte(`{"saga":"s-2"}`), longTTL))
		var exists *storage.IdempotencyKeyExistsError
		if !errors.As(err, &exists) || !errors.Is(err, storage.ErrIdempotencyKeyExists) {
			t.Fatalf("retry: got %v, want *IdempotencyKeyExistsError", err)
		}
		k := exists.Existing
		if k.Scope != "saga.start" || k.Key != "k1" || k.Partition != 1 || string(k.Result) != `{"saga":"s-1"}` ||
			!k.CreatedAt.Equal(first.Now) || !k.ExpiresAt.Equal(first.Now.Add(longTTL)) {
			t.Fatalf("existing key = %+v, want the first result stored at %v for %v", k, first.Now, longTTL)
		}
		// A retry from another partition finds the key too: keys are global.
		_, err = s.tryCommit(0, &storage.CommitParams{IdempotencyKeys: []storage.IdempotencyKeyInsert{{Scope: "saga.start", Key: "k1", TTL: longTTL}}})
		wantErr(t, "retry in another partition", err, storage.ErrIdempotencyKeyExists)
		if evs := s.readStream("saga/k1"); len(evs) != 1 || s.head(1) != 1 {
			t.Fatalf("stream holds %d events, head %d; want the first commit's 1", len(evs), s.head(1))
		}
		got, err := s.d.IdempotencyKeyGet(s.ctx, "saga.start", "k1")
		if err != nil || !bytes.Equal(got.Result, k.Result) || !got.ExpiresAt.Equal(k.ExpiresAt) || got.Partition != 1 {
			t.Fatalf("IdempotencyKeyGet = %+v, %v; want %+v", got, err, k)
		}
		// The same key in another scope is another key.
		s.commit(1, &storage.CommitParams{IdempotencyKeys: []storage.IdempotencyKeyInsert{{Scope: "bus.publish", Key: "k1", Result: []byte("x"), TTL: longTTL}}})
		_, err = s.d.IdempotencyKeyGet(s.ctx, "saga.start", "k2")
		wantErr(t, "IdempotencyKeyGet of a missing key", err, storage.ErrNotFound)
	})

	t.Run("ExpiredKeyIsReused", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 1)
		s.commit(0, startCommit("k", []byte("first"), shortTTL))
		k, err := s.d.IdempotencyKeyGet(s.ctx, "saga.start", "k")
		if err != nil {
			t.Fatal(err)
		}
		s.waitPast(k.ExpiresAt)
		_, err = s.d.IdempotencyKeyGet(s.ctx, "saga.start", "k")
		wantErr(t, "IdempotencyKeyGet of an expired key", err, storage.ErrNotFound)
		res := s.commit(0, &storage.CommitParams{
			Appends:         []storage.StreamAppend{{Stream: "saga/k", ExpectedVersion: 1, Events: events("saga/k", 1, 1)}},
			IdempotencyKeys: []storage.IdempotencyKeyInsert{{Scope: "saga.start", Key: "k", Result: []byte("second"), TTL: longTTL}},
		})
		k2, err := s.d.IdempotencyKeyGet(s.ctx, "saga.start", "k")
		if err != nil || string(k2.Result) != "second" || !k2.CreatedAt.Equal(res.Now) {
			t.Fatalf("reused key = %+v, %v; want the second result", k2, err)
		}
	})

	t.Run("DeleteExpired", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 1)
		var keys []storage.IdempotencyKeyInsert
		for i := range 5 {
			ttl := longTTL
			if i%2 == 0 {
				ttl = shortTTL
			}
			keys = append(keys, storage.IdempotencyKeyInsert{Scope: "s", Key: fmt.Sprint(i), Result: []byte{byte(i)}, TTL: ttl})
		}
		res := s.commit(0, &storage.CommitParams{IdempotencyKeys: keys})
		if n, err := s.d.IdempotencyKeyDeleteExpired(s.ctx, 10); err != nil || n != 0 {
			t.Fatalf("DeleteExpired before expiry = %d, %v; want 0", n, err)
		}
		s.waitPast(res.Now.Add(shortTTL))
		n1, err := s.d.IdempotencyKeyDeleteExpired(s.ctx, 2)
		if err != nil || n1 != 2 {
			t.Fatalf("DeleteExpired(limit 2) = %d, %v; want 2", n1, err)
		}
		n2, err := s.d.IdempotencyKeyDeleteExpired(s.ctx, 10)
		if err != nil || n2 != 1 {
			t.Fatalf("DeleteExpired(limit 10) = %d, %v; want the 1 left", n2, err)
		}
		if n, err := s.d.IdempotencyKeyDeleteExpired(s.ctx, 10); err != nil || n != 0 {
			t.Fatalf("DeleteExpired when none are expired = %d, %v; want 0", n, err)
		}
		for _, k := range []string{"1", "3"} {
			if got, err := s.d.IdempotencyKeyGet(s.ctx, "s", k); err != nil || got.Key != k {
				t.Fatalf("unexpired key %s after DeleteExpired: %+v, %v", k, got, err)
			}
		}
	})
}
