//go:build !amd64 && !arm64

package engine

// sameString is a == b (see alloc_eq.go for the architectures where it is more).
func sameString(a, b string) bool { return a == b }
