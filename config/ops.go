package config

// Ops configures the operations HTTP listener (/metrics, /healthz, /readyz).
type Ops struct {
	// Listen is host:port; empty disables the listener. Keep it off the
	// SSH port and, by default, on loopback.
	Listen string `yaml:"listen"`
}

// Audit configures the audit log: one JSON event per line.
type Audit struct {
	// Output is "stdout", "stderr", a file path (appended to), or "" to
	// disable the audit log.
	Output string `yaml:"output"`
}

// Recording configures asciicast v2 recordings of interactive sessions.
type Recording struct {
	// Dir enables recording when set; files are DIR/USER/TIME-CONN-N.cast.
	Dir string `yaml:"dir"`
	// MaxBytes caps one recording; reaching it stops the recording, not
	// the session.
	MaxBytes int64 `yaml:"max_bytes"`
}

func defaultOps() Ops             { return Ops{Listen: "127.0.0.1:9100"} }
func defaultAudit() Audit         { return Audit{Output: "stdout"} }
func defaultRecording() Recording { return Recording{MaxBytes: 64 << 20} }

func (o *Ops) validate(p *Problems, path string) {
	if o.Listen == "" {
		return
	}
	if err := validateListen(o.Listen); err != "" {
		p.Addf(path+".listen", "%s", err)
	}
}

func (a *Audit) validate(_ *Problems, _ string) {}

func (r *Recording) validate(p *Problems, path string) {
	Positive(p, path+".max_bytes", r.MaxBytes)
}
