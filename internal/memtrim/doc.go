// Package memtrim gives memory back to the operating system once a burst
// of work is over: when the process has allocated a good part of its live
// heap since the last trim and then goes quiet for a second, it runs a
// garbage collection and returns every free page (debug.FreeOSMemory).
//
// Why: with sessions that sit idle, a server allocates almost nothing, so
// the collector does not run and the garbage of the logins that opened
// them (and, with GOGC 200, up to twice the live heap) stays resident.
// Go's background scavenger keeps the pages up to the next GC goal. One
// collection at the end of a burst costs a few tens of milliseconds of
// CPU for a heap of tens of MiB, and is bounded to one per half live heap
// allocated.
//
// It must not import other bastion packages.
package memtrim
