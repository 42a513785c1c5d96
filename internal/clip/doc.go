// Package clip cuts client-supplied strings to a bounded length before
// they reach a log line or a message, with a visible marker saying how
// long the original was ("…(cut, 262144 bytes)"), so that a hostile
// client cannot fill a disk or a terminal with one name. Handler applies
// the same cut to every string attribute of a slog record.
//
// It must not import other bastion packages.
package clip
