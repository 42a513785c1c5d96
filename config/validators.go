package config

import (
	"k8s.io/apimachinery/pkg/util/validation"
)

// number is what the shared validators compare.
type number interface {
	~int | ~int64 | ~float32 | ~float64 // ~int64 includes time.Duration
}

// Positive records a problem at key when v is not above zero.
func Positive[T number](p *Problems, key string, v T) {
	if v <= 0 {
		p.Addf(key, "must be positive, not %v", v)
	}
}

// NonNegative records a problem at key when v is below zero.
func NonNegative[T number](p *Problems, key string, v T) {
	if v < 0 {
		p.Addf(key, "must not be negative, not %v", v)
	}
}

// AtLeast records a problem at key when v is below lowest.
func AtLeast[T number](p *Problems, key string, v, lowest T) {
	if v < lowest {
		p.Addf(key, "must be at least %v, not %v", lowest, v)
	}
}

// isDNSLabel reports whether s is an RFC 1123 label (what Kubernetes
// requires of a namespace name): lower-case letters, digits and '-', at
// most 63 characters.
func isDNSLabel(s string) bool { return len(validation.IsDNS1123Label(s)) == 0 }
