package config

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// readmeExample loads config/testdata/readme/name, an example the README
// shows (TestREADMEExamples keeps the two the same), as a config file in
// dir, so that its relative paths resolve there.
func readmeExample(t *testing.T, name string) (Config, string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "readme", name))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "bastion.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return cfg, dir
}

var yamlBlock = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// TestREADMEExamples: every YAML example in the README is a file under
// testdata/readme, byte for byte (and every file there is in the README),
// and every config example loads and validates. The users file is the
// static directory's format: it must at least be YAML.
func TestREADMEExamples(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range yamlBlock.FindAllStringSubmatch(string(readme), -1) {
		blocks = append(blocks, m[1])
	}
	files, err := filepath.Glob(filepath.Join("testdata", "readme", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	shown := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		if !slices.Contains(blocks, string(data)) {
			t.Errorf("%s is not in the README as it is (update one from the other)", f)
		}
		shown[string(data)] = true
		if name == "users.yaml" {
			var v map[string]any
			if err := yaml.Unmarshal(data, &v); err != nil {
				t.Errorf("%s: %v", f, err)
			}
			continue
		}
		cfg, _ := readmeExample(t, name)
		for _, problem := range problemsIn(t, data, cfg.Validate()) {
			t.Errorf("%s: Validate: %s", f, problem)
		}
	}
	for _, b := range blocks {
		if !shown[b] {
			t.Errorf("a README example has no file under testdata/readme:\n%s", strings.SplitN(b, "\n", 2)[0])
		}
	}
}

// problemsIn returns the problems of err (Validate's, one per line) at
// keys that the example sets: an example that shows one section leaves
// the rest (ssh.host_keys, ...) to the reader.
func problemsIn(t *testing.T, example []byte, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var doc any
	if err := yaml.Unmarshal(example, &doc); err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				p := strings.TrimPrefix(prefix+"."+k, ".")
				set[p] = true
				walk(p, e)
			}
		case []any:
			for _, e := range v {
				walk(prefix, e)
			}
		}
	}
	walk("", doc)
	index := regexp.MustCompile(`\[\d+\]`)
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		key, _, _ := strings.Cut(line, ":")
		if set[index.ReplaceAllString(key, "")] {
			out = append(out, line)
		}
	}
	return out
}
