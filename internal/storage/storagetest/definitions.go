package storagetest

import (
	"bytes"
	"fmt"
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
}
