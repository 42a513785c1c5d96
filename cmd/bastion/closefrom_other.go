//go:build !linux

package main

// closeInherited is a no-op where /proc/self/fd is not available.
func closeInherited() {}
