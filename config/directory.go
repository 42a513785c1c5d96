package config

// Directory chooses where users come from.
type Directory struct {
	// Type is "static" (a YAML users file, the dev default) or "ldap"
	// (the ldap: section).
	Type string `yaml:"type"`
	// File is the users file for type static.
	File string `yaml:"file"`
}

func defaultDirectory() Directory { return Directory{Type: "static"} }

func (d *Directory) validate(p *Problems, path string) {
	switch d.Type {
	case "static":
		if d.File == "" {
			p.Addf(path+".file", "required when directory.type is static")
		}
	case "ldap":
	default:
		p.Addf(path+".type", "must be static or ldap, not %q", d.Type)
	}
}
