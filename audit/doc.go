// Package audit writes bastion's audit log: one JSON object per line, one
// line per event (auth success and failure, session start and end,
// become, forward open and close, pod created and reaped). It is separate
// from the debug log; its schema is documented in docs/audit.md.
//
// Strings from clients (user names, commands) are JSON-escaped, so a
// hostile value can never break a line in two or forge a field.
//
// It must not import other bastion packages.
package audit
