// Package config is bastion's typed configuration tree: the YAML schema,
// the defaults (Default, in one place; SetDefaults fills them in after
// decoding, for the keys a file leaves unset, so that bastion dev can
// bring defaults of its own), the shared validators (Positive,
// NonNegative, AtLeast) and Validate, which reports every problem at once
// with its key path ("ldap.urls[1]: bad scheme").
//
// Each section lives in a file of its own (ssh.go, ldap.go, ...). Packages
// receive only their own section. Secrets are never in the config text:
// the config names files that hold them.
//
// It must not import other bastion packages.
package config
