package release

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// licence names a licence and says whether Accord may ship code under it.
type licence struct {
	id      string
	allowed bool
}

// markers identify a licence by a phrase of its text, searched in the head
// of a licence file (where the title or the grant is) and in this order:
// the copyleft ones first, so that a permissive phrase quoted further down
// cannot hide one. A text that matches nothing is unknown, and refused
// until a person has read it and added it here.
var markers = []struct {
	re *regexp.Regexp
	licence
}{
	// The GNU licences by their upper-case titles or their grant: MPL
	// names them in mixed case as "Secondary Licenses" without being one.
	{regexp.MustCompile(`GNU AFFERO GENERAL PUBLIC LICENSE|(?i:terms\s+of\s+the\s+GNU\s+Affero\s+General\s+Public)`), licence{"AGPL", false}},
	{regexp.MustCompile(`GNU (LESSER|LIBRARY) GENERAL PUBLIC LICENSE|(?i:terms\s+of\s+the\s+GNU\s+(Lesser|Library)\s+General\s+Public)`), licence{"LGPL", false}},
	{regexp.MustCompile(`GNU GENERAL PUBLIC LICENSE|(?i:terms\s+of\s+the\s+GNU\s+General\s+Public)`), licence{"GPL", false}},
	{regexp.MustCompile(`(?i)Server Side Public License`), licence{"SSPL", false}},
	{regexp.MustCompile(`(?i)Business Source License`), licence{"BUSL", false}},
	{regexp.MustCompile(`(?i)European Union Public Licen[cs]e`), licence{"EUPL", false}},
	{regexp.MustCompile(`(?i)Commons Clause`), licence{"Commons-Clause", false}},
	{regexp.MustCompile(`(?i)Creative Commons Attribution-(NonCommercial|ShareAlike)`), licence{"CC-NC/SA", false}},
	{regexp.MustCompile(`(?i)Mozilla Public License`), licence{"MPL-2.0", true}},
	{regexp.MustCompile(`(?i)two different licenses: MIT and Apache`), licence{"MIT AND Apache-2.0", true}},
	{regexp.MustCompile(`(?i)Apache License,?\s+Version 2\.0`), licence{"Apache-2.0", true}},
	{regexp.MustCompile(`(?i)Permission is hereby granted, free of charge`), licence{"MIT", true}},
	{regexp.MustCompile(`(?i)Redistribution and use in source and binary forms`), licence{"BSD", true}},
	{regexp.MustCompile(`(?i)Permission to use, copy, modify, and(/or)? distribute`), licence{"ISC", true}},
	{regexp.MustCompile(`(?i)This is free and unencumbered software released into the public domain`), licence{"Unlicense", true}},
}

// headBytes is how much of a licence file is searched: titles and grants
// sit at the top, while long texts (MPL's "Secondary License", a
// third-party list) mention other licences further down without being
// under them.
const headBytes = 2048

// classify names the licence of one licence file's text.
func classify(text []byte) (licence, bool) {
	head := text[:min(len(text), headBytes)]
	for _, m := range markers {
		if m.re.Match(head) {
			return m.licence, true
		}
	}
	return licence{}, false
}

// licenceFile matches the files that state a module's licence.
var licenceFile = regexp.MustCompile(`(?i)^(LICEN[CS]E|COPYING|UNLICENSE)(\.(txt|md))?$`)

type module struct{ path, version, dir string }

// releasePlatforms are the targets of `make release` (build/release.sh):
// some modules are compiled in on some of them only.
var releasePlatforms = []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64", "windows/amd64", "windows/arm64"}

// shippedModules lists the modules compiled into Accord's packages (the
// binary, the SDK, the examples) on any release platform — not those only
// tests use.
func shippedModules(t *testing.T) []module {
	t.Helper()
	seen := map[string]bool{}
	var mods []module
	for _, p := range releasePlatforms {
		goos, goarch, _ := strings.Cut(p, "/")
		cmd := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{if not .Main}}{{.Path}}\t{{.Version}}\t{{.Dir}}{{end}}{{end}}",
			"github.com/accord-saga/accord/...")
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list for %s: %v", p, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			f := strings.Split(sc.Text(), "\t")
			if len(f) != 3 || seen[f[0]] {
				continue
			}
			seen[f[0]] = true
			mods = append(mods, module{f[0], f[1], f[2]})
		}
	}
	if len(mods) == 0 {
		t.Fatal("go list found no dependency modules")
	}
	return mods
}

// TestDependencyLicences fails when a module compiled into Accord is under a
// copyleft licence (GPL, LGPL, AGPL, SSPL, …) or under none this test
// recognises. With -v it lists every module and its licence.
func TestDependencyLicences(t *testing.T) {
	for _, m := range shippedModules(t) {
		if m.dir == "" {
			t.Errorf("%s %s: not in the module cache (run go mod download)", m.path, m.version)
			continue
		}
		entries, err := os.ReadDir(m.dir)
		if err != nil {
			t.Errorf("%s: %v", m.path, err)
			continue
		}
		var ids []string
		for _, e := range entries {
			if e.IsDir() || !licenceFile.MatchString(e.Name()) {
				continue
			}
			text, err := os.ReadFile(filepath.Join(m.dir, e.Name()))
			if err != nil {
				t.Errorf("%s: %v", m.path, err)
				continue
			}
			l, ok := classify(text)
			switch {
			case !ok:
				t.Errorf("%s %s: %s is a licence this check does not know; read it, then add it to markers", m.path, m.version, e.Name())
			case !l.allowed:
				t.Errorf("%s %s: %s is %s, a copyleft licence Accord cannot ship under", m.path, m.version, e.Name(), l.id)
			}
			ids = append(ids, l.id)
		}
		if len(ids) == 0 {
			t.Errorf("%s %s: no licence file", m.path, m.version)
		}
		t.Logf("%-70s %-40s %s", m.path, m.version, strings.Join(ids, ", "))
	}
}

// TestClassify holds the classifier to the texts it must refuse and accept.
func TestClassify(t *testing.T) {
	for _, c := range []struct {
		text    string
		id      string
		allowed bool
	}{
		{"                    GNU GENERAL PUBLIC LICENSE\n                       Version 3, 29 June 2007\n", "GPL", false},
		{"\t\t    GNU GENERAL PUBLIC LICENSE\n\t\t       Version 2, June 1991\n", "GPL", false},
		{"                   GNU LESSER GENERAL PUBLIC LICENSE\n                       Version 3, 29 June 2007\n", "LGPL", false},
		{"                    GNU AFFERO GENERAL PUBLIC LICENSE\n                       Version 3, 19 November 2007\n", "AGPL", false},
		{"                     Server Side Public License\n                     VERSION 1, OCTOBER 16, 2018\n", "SSPL", false},
		{"Business Source License 1.1\n\nParameters\n", "BUSL", false},
		{"This program is free software: you can redistribute it and/or modify\nit under the terms of the GNU General Public License as published by", "GPL", false},
		{"This library is free software; you can redistribute it and/or\nmodify it under the terms of the GNU Lesser General Public", "LGPL", false},
		{"                                 Apache License\n                           Version 2.0, January 2004\n", "Apache-2.0", true},
		{"Copyright (c) 2013 A\n\nMIT License\n\nPermission is hereby granted, free of charge, to any person", "MIT", true},
		{"Copyright (c) 2009 A. All rights reserved.\n\nRedistribution and use in source and binary forms, with or without", "BSD", true},
		{"Mozilla Public License Version 2.0\n==================================\n\n1.12. \"Secondary License\"\n      means either the GNU General Public License, Version 2.0", "MPL-2.0", true},
	} {
		l, ok := classify([]byte(c.text))
		if !ok || l.id != c.id || l.allowed != c.allowed {
			t.Errorf("classify(%.40q) = %+v, %v; want %s allowed=%v", c.text, l, ok, c.id, c.allowed)
		}
	}
	if _, ok := classify([]byte("All rights reserved. You may not copy this.")); ok {
		t.Error("an unknown text was classified")
	}
}

// TestNoticeCreditsDependencies checks that every shipped module with a
// NOTICE file is credited in Accord's NOTICE, as the Apache licence asks of
// a redistribution.
func TestNoticeCreditsDependencies(t *testing.T) {
	ours, err := os.ReadFile("../../NOTICE")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range shippedModules(t) {
		for _, name := range []string{"NOTICE", "NOTICE.txt", "NOTICE.md"} {
			if _, err := os.Stat(filepath.Join(m.dir, name)); err != nil {
				continue
			}
			if !bytes.Contains(ours, []byte(m.path)) {
				t.Errorf("%s has a %s that ../../NOTICE does not carry", m.path, name)
			}
		}
	}
}
