package config

// Backend chooses where sessions run.
type Backend struct {
	// Type is "local" (pty processes on this host) or "kube".
	Type string `yaml:"type"`
}

func defaultBackend() Backend { return Backend{Type: "local"} }

func (b *Backend) validate(p *Problems, path string) {
	switch b.Type {
	case "local":
	default:
		p.Addf(path+".type", "must be local, not %q", b.Type)
	}
}
