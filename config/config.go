package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration file.
type Config struct {
	SSH        SSH        `yaml:"ssh"`
	Limits     Limits     `yaml:"limits"`
	Forwarding Forwarding `yaml:"forwarding"`
	Directory  Directory  `yaml:"directory"`
	LDAP       LDAP       `yaml:"ldap"`
	Backend    Backend    `yaml:"backend"`
	Kube       Kube       `yaml:"kube"`
	Log        Log        `yaml:"log"`
	Ops        Ops        `yaml:"ops"`
	Audit      Audit      `yaml:"audit"`
	Recording  Recording  `yaml:"recording"`
}

// Default returns the configuration used when a key is not set.
func Default() Config {
	return Config{
		SSH:        defaultSSH(),
		Limits:     defaultLimits(),
		Forwarding: defaultForwarding(),
		Directory:  defaultDirectory(),
		LDAP:       defaultLDAP(),
		Backend:    defaultBackend(),
		Kube:       defaultKube(),
		Log:        Log{Format: "json", Level: "info"},
		Ops:        defaultOps(),
		Audit:      defaultAudit(),
		Recording:  defaultRecording(),
	}
}

// Log configures the debug/operational log (not the audit log).
type Log struct {
	// Format is "json" or "text".
	Format string `yaml:"format"`
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
}

// Load reads a YAML config file and fills in Default() for every key it
// does not set. Unknown keys are errors. Relative paths in the file are
// resolved against the file's directory. Load does not validate: call
// Validate.
func Load(path string) (Config, error) { return LoadWithDefaults(path, Default()) }

// LoadWithDefaults is Load with other defaults (bastion dev's).
func LoadWithDefaults(path string, defaults Config) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	cfg, err := parse(data, defaults)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.resolvePaths(filepath.Dir(path))
	return cfg, nil
}

// Parse decodes YAML and fills in Default() for every key it does not
// set. Unknown keys are errors.
func Parse(data []byte) (Config, error) { return parse(data, Default()) }

func parse(data []byte, defaults Config) (Config, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("parse: %s", cleanYAMLError(err))
	}
	// A second document is almost certainly a mistake.
	var extra any
	if err := dec.Decode(&extra); err == nil {
		return Config{}, fmt.Errorf("parse: more than one YAML document")
	}
	var cfg Config
	if len(doc.Content) > 0 {
		strict := yaml.NewDecoder(bytes.NewReader(data))
		strict.KnownFields(true)
		if err := strict.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return Config{}, fmt.Errorf("parse: %s", cleanYAMLError(err))
		}
	}
	SetDefaults(&cfg, &doc, defaults)
	return cfg, nil
}

func cleanYAMLError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return strings.Join(te.Errors, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for i := range c.SSH.HostKeys {
		abs(&c.SSH.HostKeys[i])
	}
	for i := range c.SSH.TrustedUserCAKeys {
		abs(&c.SSH.TrustedUserCAKeys[i])
	}
	abs(&c.SSH.RevokedKeys)
	abs(&c.Directory.File)
	abs(&c.Recording.Dir)
	if o := c.Audit.Output; o != "stdout" && o != "stderr" {
		abs(&c.Audit.Output)
	}
	c.LDAP.resolvePaths(abs)
	c.Kube.resolvePaths(abs)
}

// Problems collects validation errors with their key paths.
type Problems struct{ errs []error }

// Addf records a problem at key path.
func (p *Problems) Addf(path, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

// Err returns all problems joined, or nil.
func (p *Problems) Err() error { return errors.Join(p.errs...) }

// Validate reports every problem in the configuration, each prefixed with
// its key path, joined with errors.Join (one per line).
func (c *Config) Validate() error {
	var p Problems
	c.SSH.validate(&p, "ssh")
	c.Limits.validate(&p, "limits")
	c.Forwarding.validate(&p, "forwarding")
	c.Directory.validate(&p, "directory")
	if c.Directory.Type == "ldap" {
		c.LDAP.validate(&p, "ldap")
	}
	c.validateBackend(&p)
	c.Ops.validate(&p, "ops")
	c.Audit.validate(&p, "audit")
	c.Recording.validate(&p, "recording")
	switch c.Log.Format {
	case "json", "text":
	default:
		p.Addf("log.format", "must be json or text, not %q", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.Addf("log.level", "must be debug, info, warn or error, not %q", c.Log.Level)
	}
	return p.Err()
}
