package config

// Backend chooses where sessions run.
type Backend struct {
	// Type is "local" (pty processes on this host) or "kube" (a pod per
	// account in the project's cluster; the kube: section).
	Type string `yaml:"type"`
}

func defaultBackend() Backend { return Backend{Type: "local"} }

// validateBackend checks backend.type and the section of the chosen
// backend.
func (c *Config) validateBackend(p *Problems) {
	switch c.Backend.Type {
	case "local":
	case "kube":
		c.Kube.validate(p, "kube")
	default:
		p.Addf("backend.type", "must be local or kube, not %q", c.Backend.Type)
	}
}
