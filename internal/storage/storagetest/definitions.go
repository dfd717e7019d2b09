package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/accord-saga/accord/internal/storage"
)

func exerciseDefinitions(t *testing.T, h Harness) {
	def := func(name string, version int, content string) *storage.Definition {
		return &storage.Definition{Name: name, Version: version, Content: []byte(content), Hash: "h:" + content}
	}
	same := func(a, b storage.Definition) bool {
		return a.Name == b.Name && a.Version == b.Version && bytes.Equal(a.Content, b.Content) && a.Hash == b.Hash && a.CreatedAt.Equal(b.CreatedAt)
	}

	t.Run("PutGet", func(t *testing.T) {
		t.Parallel()
		d := h.Open(t, 1)
		ctx := t.Context()
		before, _ := d.Now(ctx)
		v1, created, err := d.DefinitionPut(ctx, def("order", 1, `{"steps":1}`))
		if err != nil || !created || v1.Name != "order" || v1.Version != 1 || string(v1.Content) != `{"steps":1}` || v1.Hash != `h:{"steps":1}` || v1.CreatedAt.Before(before) {
			t.Fatalf("first put = %+v, %v, %v; want a created record", v1, created, err)
		}
		again, created, err := d.DefinitionPut(ctx, def("order", 1, `{"steps":1}`))
		if err != nil || created || !same(again, v1) {
			t.Fatalf("identical put = %+v, %v, %v; want the stored record, not created", again, created, err)
		}
		_, _, err = d.DefinitionPut(ctx, def("order", 1, `{"steps":2}`))
		wantErr(t, "put of different content under a registered version", err, storage.ErrDefinitionConflict)
		if got, err := d.DefinitionGet(ctx, "order", 1); err != nil || !same(got, v1) {
			t.Fatalf("get after a conflicting put = %+v, %v; want the first record", got, err)
		}
		v2, created, err := d.DefinitionPut(ctx, def("order", 2, `{"steps":2}`))
		if err != nil || !created {
			t.Fatalf("put of version 2 = %v, %v", created, err)
		}
		if _, _, err := d.DefinitionPut(ctx, def("other", 1, `{"steps":2}`)); err != nil {
			t.Fatalf("put of the same content under another name: %v", err)
		}
		if got, err := d.DefinitionGet(ctx, "order", 0); err != nil || !same(got, v2) {
			t.Fatalf("get latest = %+v, %v; want version 2", got, err)
		}
		if got, err := d.DefinitionGet(ctx, "order", 1); err != nil || !same(got, v1) {
			t.Fatalf("get version 1 = %+v, %v", got, err)
		}
		_, err = d.DefinitionGet(ctx, "order", 3)
		wantErr(t, "get of a missing version", err, storage.ErrNotFound)
		_, err = d.DefinitionGet(ctx, "missing", 0)
		wantErr(t, "get latest of a missing name", err, storage.ErrNotFound)
	})

	t.Run("ListPaging", func(t *testing.T) {
		t.Parallel()
		d := h.Open(t, 1)
		ctx := t.Context()
		// Registered out of order; listed by name, then version (numerically).
		for _, nv := range []struct {
			n string
			v int
		}{{"b", 2}, {"a", 10}, {"b", 1}, {"a", 2}, {"c", 1}, {"a", 1}} {
			if _, _, err := d.DefinitionPut(ctx, def(nv.n, nv.v, fmt.Sprintf("%s%d", nv.n, nv.v))); err != nil {
				t.Fatal(err)
			}
		}
		names := func(ds []storage.Definition) string {
			var b bytes.Buffer
			for _, x := range ds {
				fmt.Fprintf(&b, "%s%d ", x.Name, x.Version)
			}
			return b.String()
		}
		all, err := d.DefinitionList(ctx, &storage.DefinitionListParams{Limit: 100})
		if err != nil || names(all) != "a1 a2 a10 b1 b2 c1 " {
			t.Fatalf("list = %q, %v", names(all), err)
		}
		var paged []storage.Definition
		p := &storage.DefinitionListParams{Limit: 4}
		for range 10 {
			page, err := d.DefinitionList(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			paged = append(paged, page...)
			if len(page) < p.Limit {
				break
			}
			p.AfterName, p.AfterVersion = page[len(page)-1].Name, page[len(page)-1].Version
		}
		if names(paged) != names(all) {
			t.Fatalf("paged list = %q, want %q", names(paged), names(all))
		}
		only, err := d.DefinitionList(ctx, &storage.DefinitionListParams{Name: "a", AfterName: "a", AfterVersion: 1, Limit: 100})
		if err != nil || names(only) != "a2 a10 " {
			t.Fatalf("list of name a after version 1 = %q, %v; want a2 a10", names(only), err)
		}
		if _, err := d.DefinitionList(ctx, &storage.DefinitionListParams{Name: "zzz", Limit: 1}); err != nil {
			t.Fatalf("list of a missing name: %v", err)
		}
	})

	t.Run("DisableEnable", func(t *testing.T) {
		t.Parallel()
		d := h.Open(t, 1)
		ctx := t.Context()
		for v := 1; v <= 2; v++ {
			if _, _, err := d.DefinitionPut(ctx, def("order", v, fmt.Sprint(v))); err != nil {
				t.Fatal(err)
			}
		}
		latest := func(want int) {
			t.Helper()
			got, err := d.DefinitionGet(ctx, "order", 0)
			if want == 0 {
				wantErr(t, "latest with every version disabled", err, storage.ErrNotFound)
				return
			}
			if err != nil || got.Version != want || got.Disabled {
				t.Fatalf("latest = version %d (disabled %t), %v; want version %d", got.Version, got.Disabled, err, want)
			}
		}
		setDisabled := func(v int, disabled bool) storage.Definition {
			t.Helper()
			got, err := d.DefinitionSetDisabled(ctx, &storage.DefinitionSetDisabledParams{Name: "order", Version: v, Disabled: disabled})
			if err != nil || got.Version != v || got.Disabled != disabled || string(got.Content) != fmt.Sprint(v) {
				t.Fatalf("set disabled %t on version %d = %+v, %v", disabled, v, got, err)
			}
			return got
		}
		latest(2)
		setDisabled(2, true)
		latest(1)
		if got, err := d.DefinitionGet(ctx, "order", 2); err != nil || !got.Disabled {
			t.Fatalf("get of disabled version 2 = %+v, %v; want it, disabled", got, err)
		}
		list, err := d.DefinitionList(ctx, &storage.DefinitionListParams{Name: "order", Limit: 10})
		if err != nil || len(list) != 2 || list[0].Disabled || !list[1].Disabled {
			t.Fatalf("list = %+v, %v; want version 1 enabled, 2 disabled", list, err)
		}
		if got, created, err := d.DefinitionPut(ctx, def("order", 2, "2")); err != nil || created || !got.Disabled {
			t.Fatalf("identical put of a disabled version = %+v, %v, %v; want it as stored, still disabled", got, created, err)
		}
		setDisabled(2, true) // twice is harmless
		setDisabled(1, true)
		latest(0)
		setDisabled(2, false)
		latest(2)
		_, err = d.DefinitionSetDisabled(ctx, &storage.DefinitionSetDisabledParams{Name: "order", Version: 3, Disabled: true})
		wantErr(t, "disable of a missing version", err, storage.ErrNotFound)
		_, err = d.DefinitionSetDisabled(ctx, &storage.DefinitionSetDisabledParams{Name: "order", Version: 0, Disabled: true})
		wantErr(t, "disable of version 0", err, storage.ErrInvalid)
	})

	t.Run("Delete", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 1)
		ctx := s.ctx
		top := math.MaxInt32 // the highest version there is: were it kept, it would be the latest for ever
		for _, v := range []int{1, top} {
			if _, _, err := s.d.DefinitionPut(ctx, def("order", v, fmt.Sprint(v))); err != nil {
				t.Fatal(err)
			}
		}
		ref := storage.DefinitionRef{Name: "order", Version: top}
		rec := storage.Saga{ID: "s1", Stream: "saga/s1", Definition: "order", DefinitionVersion: top, Status: "running"}
		s.commit(0, &storage.CommitParams{SagaUpserts: []storage.Saga{rec}, Definitions: []storage.DefinitionRef{ref}})
		del := func() error {
			return s.d.DefinitionDelete(ctx, &storage.DefinitionDeleteParams{Name: "order", Version: top, InUseStatuses: []string{"stuck"}})
		}
		var inUse *storage.DefinitionInUseError
		if err := del(); !errors.As(err, &inUse) || inUse.Sagas != 1 || !errors.Is(err, storage.ErrDefinitionInUse) {
			t.Fatalf("delete of a version a running saga uses: %v, want DefinitionInUseError counting 1", err)
		}
		// A terminal status named in InUseStatuses still counts.
		rec.Status, rec.Terminal = "stuck", true
		s.commit(0, &storage.CommitParams{SagaUpserts: []storage.Saga{rec}})
		if err := del(); !errors.As(err, &inUse) || inUse.Sagas != 1 {
			t.Fatalf("delete of a version a saga in an in-use status uses: %v, want DefinitionInUseError counting 1", err)
		}
		rec.Status = "completed"
		s.commit(0, &storage.CommitParams{SagaUpserts: []storage.Saga{rec}})
		if err := del(); err != nil {
			t.Fatalf("delete of a version only ended sagas used: %v", err)
		}
		if got, err := s.d.DefinitionGet(ctx, "order", 0); err != nil || got.Version != 1 {
			t.Fatalf("latest after the delete = %+v, %v; want version 1", got, err)
		}
		_, err := s.d.DefinitionGet(ctx, "order", top)
		wantErr(t, "get of a deleted version", err, storage.ErrNotFound)
		wantErr(t, "delete of a deleted version", del(), storage.ErrNotFound)
		_, err = s.d.DefinitionSetDisabled(ctx, &storage.DefinitionSetDisabledParams{Name: "order", Version: top, Disabled: true})
		wantErr(t, "disable of a deleted version", err, storage.ErrNotFound)
		if list, err := s.d.DefinitionList(ctx, &storage.DefinitionListParams{Limit: 10}); err != nil || len(list) != 1 || list[0].Version != 1 {
			t.Fatalf("list after the delete = %+v, %v; want version 1 only", list, err)
		}
		if got, err := s.d.SagaGet(ctx, "s1"); err != nil || got.DefinitionVersion != top {
			t.Fatalf("the ended saga after the delete = %+v, %v; want it kept", got, err)
		}

		// A start on the deleted version writes nothing.
		rec2 := storage.Saga{ID: "s2", Stream: "saga/s2", Definition: "order", DefinitionVersion: top, Status: "running"}
		_, err = s.tryCommit(0, &storage.CommitParams{
			Appends:     []storage.StreamAppend{{Stream: "saga/s2", ExpectedVersion: storage.NoStream, Events: events("saga/s2", 0, 1)}},
			SagaUpserts: []storage.Saga{rec2}, Definitions: []storage.DefinitionRef{ref},
		})
		wantErr(t, "start on a deleted version", err, storage.ErrDefinitionDeleted)
		_, err = s.d.SagaGet(ctx, "s2")
		wantErr(t, "saga of a refused start", err, storage.ErrNotFound)
		if evs := s.readStream("saga/s2"); len(evs) != 0 {
			t.Fatalf("a refused start wrote %d events", len(evs))
		}
		_, err = s.tryCommit(0, &storage.CommitParams{SagaUpserts: []storage.Saga{rec2},
			Definitions: []storage.DefinitionRef{{Name: "never", Version: 1}}})
		wantErr(t, "start on a version never registered", err, storage.ErrDefinitionDeleted)

		// The number stays taken by its content: other content is refused,
		// the same content registers it again.
		_, _, err = s.d.DefinitionPut(ctx, def("order", top, "other"))
		wantErr(t, "put of other content under a deleted version", err, storage.ErrDefinitionConflict)
		again, created, err := s.d.DefinitionPut(ctx, def("order", top, fmt.Sprint(top)))
		if err != nil || !created || string(again.Content) != fmt.Sprint(top) || again.Disabled {
			t.Fatalf("put of the same content under a deleted version = %+v, %v, %v; want it registered again", again, created, err)
		}
		if got, err := s.d.DefinitionGet(ctx, "order", 0); err != nil || got.Version != top {
			t.Fatalf("latest after registering again = %+v, %v", got, err)
		}
		s.commit(0, &storage.CommitParams{SagaUpserts: []storage.Saga{rec2}, Definitions: []storage.DefinitionRef{ref}})
	})

	// A start and a delete of its version, at the same moment: exactly one
	// of them succeeds, and a saga never runs on a deleted version.
	t.Run("DeleteRacesStart", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 1)
		ctx := s.ctx
		const rounds = 20
		starts, deletes := 0, 0
		for v := 1; v <= rounds; v++ {
			if _, _, err := s.d.DefinitionPut(ctx, def("race", v, fmt.Sprint(v))); err != nil {
				t.Fatal(err)
			}
			id := fmt.Sprintf("race-%d", v)
			var commitErr, deleteErr error
			var wg sync.WaitGroup
			ready := make(chan struct{})
			wg.Add(2)
			go func() {
				defer wg.Done()
				<-ready
				_, commitErr = s.tryCommit(0, &storage.CommitParams{
					SagaUpserts: []storage.Saga{{ID: id, Stream: "saga/" + id, Definition: "race", DefinitionVersion: v, Status: "running"}},
					Definitions: []storage.DefinitionRef{{Name: "race", Version: v}},
				})
			}()
			go func() {
				defer wg.Done()
				<-ready
				deleteErr = s.d.DefinitionDelete(ctx, &storage.DefinitionDeleteParams{Name: "race", Version: v})
			}()
			close(ready)
			wg.Wait()
			_, getErr := s.d.SagaGet(ctx, id)
			switch {
			case commitErr == nil && errors.Is(deleteErr, storage.ErrDefinitionInUse) && getErr == nil:
				starts++
			case deleteErr == nil && errors.Is(commitErr, storage.ErrDefinitionDeleted) && errors.Is(getErr, storage.ErrNotFound):
				deletes++
			default:
				t.Fatalf("round %d: start %v, delete %v, saga %v; want exactly one to succeed", v, commitErr, deleteErr, getErr)
			}
		}
		t.Logf("%d rounds: the start won %d, the delete %d", rounds, starts, deletes)
	})
}
