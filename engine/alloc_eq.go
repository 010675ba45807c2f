//go:build amd64 || arm64

package engine

import "unsafe"

// sameString is a == b, faster for the short strings the allocator compares once or
// twice per row (task list names, domains, worker ids). A string == that the lengths do
// not settle calls the runtime's memequal, whose call and set-up cost more than the
// comparison itself at these sizes; rows read from a store never share memory with the
// names they are compared to, so its same-pointer shortcut does not help. Strings of 8 to
// 16 bytes are compared here, inline, as two overlapping words (4 to 7: half-words). (Unaligned loads are
// cheap on these architectures; others use alloc_eq_other.go.)
func sameString(a, b string) bool {
	n := uint(len(a))
	if n != uint(len(b)) || n-4 > 12 {
		return a == b
	}
	p, q := unsafe.Pointer(unsafe.StringData(a)), unsafe.Pointer(unsafe.StringData(b))
	if n >= 8 {
		return *(*uint64)(p) == *(*uint64)(q) && *(*uint64)(unsafe.Add(p, n-8)) == *(*uint64)(unsafe.Add(q, n-8))
	}
	return *(*uint32)(p) == *(*uint32)(q) && *(*uint32)(unsafe.Add(p, n-4)) == *(*uint32)(unsafe.Add(q, n-4))
}
