// The import rules of bastion's packages, as each package's doc.go states
// them, checked against what the packages import (directly or not), in
// the manner of Go's own src/go/build/deps_test.go. A doc.go states its
// rules in sentences of two forms:
//
//	It must not import sshd, auth/ldap or k8s.io/client-go.
//	It must not import other bastion packages.
//	It is for tests only: non-test code must not import it.
//
// Paths of this module are written without the module path and name one
// package; another module's path forbids its sub-packages too. Every package but a command must state at
// least one rule, and every rule must name something that exists.
package bastion_test

import (
	"bufio"
	"bytes"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const module = "github.com/bastion-ssh/bastion"

type pkgInfo struct {
	path string // module-relative ("sshd"); "" for the module root
	dir  string
	main bool
	deps []string // every package it imports, directly or not (not its tests')
}

func listPackages(t *testing.T) map[string]*pkgInfo {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}\t{{.Dir}}\t{{.Name}}\t{{join .Deps \" \"}}", "./...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]*pkgInfo{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<22)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 4 {
			t.Fatalf("go list line %q", sc.Text())
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(f[0], module), "/")
		pkgs[rel] = &pkgInfo{path: rel, dir: f[1], main: f[2] == "main", deps: strings.Fields(f[3])}
	}
	return pkgs
}

// sentenceEnd ends a sentence: a full stop or semicolon before a space or
// the end (package paths such as k8s.io keep their dots).
var sentenceEnd = regexp.MustCompile(`[.;:](\s|$)`)

type rules struct {
	forbidden []string // full import paths
	noBastion bool     // "other bastion packages"
	testOnly  bool     // "non-test code must not import it"
}

// docRules reads the rules in pkg's doc.go.
func docRules(t *testing.T, pkgs map[string]*pkgInfo, p *pkgInfo) (rules, bool) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(p.dir, "doc.go"), nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil || f.Doc == nil {
		return rules{}, false
	}
	text := strings.Join(strings.Fields(f.Doc.Text()), " ")
	var r rules
	r.testOnly = strings.Contains(text, "non-test code must not import it")
	for _, part := range strings.Split(text, "must not import")[1:] {
		clause := part
		if loc := sentenceEnd.FindStringIndex(part); loc != nil {
			clause = part[:loc[0]]
		}
		if strings.TrimSpace(clause) == "it" {
			continue // the test-only rule
		}
		named := 0
		if strings.Contains(clause, "other bastion packages") {
			r.noBastion = true
			named++
		}
		for _, w := range strings.FieldsFunc(clause, func(r rune) bool { return r == ',' || r == ' ' || r == '(' || r == ')' }) {
			switch {
			case pkgs[w] != nil:
				r.forbidden = append(r.forbidden, module+"/"+w+"$")
				named++
			case strings.Contains(strings.SplitN(w, "/", 2)[0], ".") && strings.Contains(w, "/"):
				r.forbidden = append(r.forbidden, w)
				named++
			case strings.ContainsAny(w, "/-"):
				t.Errorf("%s/doc.go: must not import %q: no package of this module has that path, and another module's needs its full path", p.path, w)
			}
		}
		if named == 0 {
			t.Errorf("%s/doc.go: %q names no package", p.path, "must not import"+clause)
		}
	}
	return r, true
}

// under reports whether dep is path or, unless path ends in "$" (one
// package), below it.
func under(dep, path string) bool {
	if one, ok := strings.CutSuffix(path, "$"); ok {
		return dep == one
	}
	return dep == path || strings.HasPrefix(dep, path+"/")
}

func TestDependencyRules(t *testing.T) {
	pkgs := listPackages(t)
	testOnly := map[string]bool{}
	all := map[string]rules{}
	for _, p := range pkgs {
		if p.path == "" {
			continue // this test
		}
		r, ok := docRules(t, pkgs, p)
		if !ok {
			if !p.main {
				t.Errorf("%s has no doc.go with a package comment", p.path)
			}
			continue
		}
		if !p.main && !r.noBastion && len(r.forbidden) == 0 {
			t.Errorf("%s/doc.go states no import rule (\"It must not import ...\")", p.path)
		}
		if r.testOnly {
			testOnly[module+"/"+p.path] = true
		}
		all[p.path] = r
	}
	for path, r := range all {
		for _, dep := range pkgs[path].deps {
			for _, bad := range r.forbidden {
				if under(dep, bad) {
					t.Errorf("%s imports %s; its doc.go says it must not import %s", path, dep, strings.TrimSuffix(strings.TrimPrefix(bad, module+"/"), "$"))
				}
			}
			if r.noBastion && under(dep, module) {
				t.Errorf("%s imports %s; its doc.go says it must not import other bastion packages", path, dep)
			}
		}
	}
	// Test-only packages are imported by tests and by each other, never by
	// the code that ships.
	for _, p := range pkgs {
		if testOnly[module+"/"+p.path] {
			continue
		}
		for _, dep := range p.deps {
			if testOnly[dep] {
				t.Errorf("%s imports %s, which is for tests only", p.path, dep)
			}
		}
	}
}
