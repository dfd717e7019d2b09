package ident_test

import (
	"errors"
	"testing"
	"unicode"

	"github.com/accord-saga/accord/internal/ident"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"order-42", nil},
		{"commande/été 1", nil},
		{"", nil},
		{"a\r\nb", ident.ErrControl},
		{"a\tb", ident.ErrControl},
		{"a\x00b", ident.ErrControl},
		{"a\x7fb", ident.ErrControl},
		{"a\u0085b", ident.ErrControl}, // C1: NEL
		{"a\u009fb", ident.ErrControl},
		{"a\xffb", ident.ErrNotUTF8},
	} {
		if got := ident.Check(tc.in); !errors.Is(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("Check(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestCheckText(t *testing.T) {
	t.Parallel()
	if err := ident.CheckText("line one\nline two\ttabbed"); err != nil {
		t.Errorf("free text with line breaks refused: %v", err)
	}
	if err := ident.CheckText("a\x00b"); !errors.Is(err, ident.ErrNUL) {
		t.Errorf("NUL: got %v", err)
	}
	if err := ident.CheckText("a\xff"); !errors.Is(err, ident.ErrNotUTF8) {
		t.Errorf("not UTF-8: got %v", err)
	}
}

func TestIsControlMatchesUnicode(t *testing.T) {
	t.Parallel()
	for r := rune(0); r < 0x300; r++ {
		if ident.IsControl(r) != unicode.IsControl(r) {
			t.Errorf("IsControl(%U) = %v, unicode says %v", r, ident.IsControl(r), unicode.IsControl(r))
		}
	}
}
