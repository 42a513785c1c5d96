package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

// decodeOverDefault is how Parse worked before defaults were applied
// after decoding: the YAML decoded over Default().
func decodeOverDefault(t *testing.T, data []byte) Config {
	t.Helper()
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && err.Error() != "EOF" {
		t.Fatalf("decode: %v", err)
	}
	return cfg
}

// TestDefaultsAfterDecoding: filling in defaults after decoding gives the
// same config as decoding over the defaults, for partial sections, null
// values, explicit zero values, anchors and merge keys, and every file in
// testdata.
func TestDefaultsAfterDecoding(t *testing.T) {
	docs := map[string]string{
		"empty":          "",
		"comment only":   "# nothing\n",
		"partial":        "ssh:\n  listen: \":2222\"\nlimits:\n  max_auth_tries: 3\n",
		"null section":   "ssh:\nkube: ~\n",
		"null values":    "ops:\n  listen: ~\nforwarding:\n  allow: ~\nkube:\n  pod:\n    pids_limit: ~\n",
		"explicit zero":  "ops:\n  listen: \"\"\nforwarding:\n  allow: []\nldap:\n  start_tls: false\nlimits:\n  penalties:\n    enabled: false\n",
		"startups":       "limits:\n  max_startups: \"10:30:60\"\n",
		"anchor + merge": "ldap:\n  timeout: &t 2s\n  dial_timeout: *t\nkube:\n  pod: &pod\n    cpu_limit: 2\n  preflight:\n    <<: {timeout: 5s}\n",
		"kube clusters":  "backend:\n  type: kube\nkube:\n  default_project: a\n  clusters:\n  - name: a\n    kubeconfig: /k\n    pod:\n      memory_limit: 2Gi\n",
	}
	files, _ := filepath.Glob("testdata/readme/*.yaml")
	for _, f := range files {
		if filepath.Base(f) == "users.yaml" { // a static directory, not a config
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs[f] = string(b)
	}
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			got, err := Parse([]byte(doc))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if want := decodeOverDefault(t, []byte(doc)); !reflect.DeepEqual(got, want) {
				t.Errorf("Parse differs from decoding over Default():\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestLoadWithDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	// ops.listen set to the usual default is set, and kept.
	if err := os.WriteFile(path, []byte("ops:\n  listen: 127.0.0.1:9100\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	def := Default()
	def.Ops.Listen = ""
	def.Audit.Output = "stderr"
	cfg, err := LoadWithDefaults(path, def)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Ops.Listen != "127.0.0.1:9100" || cfg.Audit.Output != "stderr" {
		t.Errorf("ops.listen = %q, audit.output = %q; want the file's 127.0.0.1:9100 and the given default stderr", cfg.Ops.Listen, cfg.Audit.Output)
	}
}
